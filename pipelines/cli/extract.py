"""`affect extract`: run encoders over a clips file (or a dataset's layout) into a store."""

from __future__ import annotations

import os
import sys

import click

from extract.media_base import MAX_FPS, MIN_FPS
from features_store import open_store
from features_store.errors import Interrupted, UserError
from pipelines.cli.params import FiniteFloatRange
from pipelines.console import verbose_option
from pipelines.storage_options import storage_option


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@click.command()
@storage_option
@click.option("--clips", "clips_file", type=click.Path(dir_okay=False),
              help="Clips file (JSON lines: clip_id, video|frames|audio|text, ...).")
@click.option("--media", type=click.Path(exists=False),
              help="A media file, a frame folder or a folder of them (subfolders included): one "
                   "clip per file, named by its path; no clips file needed.")
@click.option("--dataset", help="Dataset layout (see `affect datasets ls`) instead of --clips.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Dataset folder.")
@click.option("--store", "--out", "store_url", required=True,
              help="Store path or fsspec URL (created if new).")
@click.option("--encoders", help="Comma-separated, name[@face|@body]; default: the recipe's.")
@click.option("--weights", default="default", show_default=True, envvar="AFFECT_WEIGHTS",
              show_envvar=True,
              help="default (published weights from the library cache), random, or a path.")
@click.option("--device", default="auto", show_default=True, envvar="AFFECT_DEVICE",
              show_envvar=True, help="auto, cpu, cuda, cuda:1...")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True,
              help="Frames per video forward; every forward has exactly this many (part of "
                   "the stream key: values depend on it).")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Intra-op threads of each CPU forward, fixed whatever the machine or "
                   "scheduler (part of a CPU stream's key: values depend on it).")
@click.option("--limit", type=click.IntRange(1), help="Only the first N clips.")
@click.option("--fps", type=FiniteFloatRange(min=MIN_FPS, max=MAX_FPS), default=None,
              help="Video frame rate for encoders without one of their own "
                   "[default: the dataset recipe's, else 25].")
@click.option("--decode-size", type=click.IntRange(32), default=None,
              help="Scale frames to this shorter side while decoding, once for all video "
                   "encoders (faster on large videos; default: decoded size, exact parity).")
@click.option("--resize-with", type=click.Choice(["pil", "tensor"]), default="pil",
              show_default=True, help="Resize whole frames with PIL (the upstream transforms, "
              "exact) or torchvision's tensor kernels (faster on large frames, within one grey "
              "level; a separate stream).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16",
              show_default=True)
@click.option("--reduced", is_flag=True, envvar="AFFECT_REDUCED", show_envvar=True,
              help="Smaller architectures of the same families (tests and smoke runs).")
@click.option("--clips-per-part", type=click.IntRange(1), default=32, show_default=True)
@click.option("--decode-workers", type=click.IntRange(0), default=2, show_default=True)
@click.option("--decode-in", type=click.Choice(["auto", "threads", "processes"]), default="auto",
              show_default=True, help="Decode workers as threads or processes (processes scale "
              "with cores; auto: processes when a CUDA device waits for several workers).")
@click.option("--decoder", type=click.Choice(["pyav", "torchcodec", "torchcodec:cuda"]),
              default="pyav", show_default=True,
              help="Video decoder; torchcodec needs the optional torchcodec package and FFmpeg.")
@click.option("--scheduler",
              help="Run on dask: local[:N] (a cluster of N workers on this machine; default "
                   "one per GPU, else one per core pair) or a scheduler address tcp://HOST:PORT.")
@click.option("--scheduler-file", type=click.Path(dir_okay=False),
              help="Run on the dask scheduler described by this file (`dask scheduler "
                   "--scheduler-file`, SLURM deployments).")
@click.option("--views", default="",
              help="Augmented views of every video stream, each its own stream, e.g. "
                   "hflip,rot-4,rot+4 (heads that train on them draw one per clip and epoch).")
@click.option("--strict", is_flag=True, help="Exit non-zero if any clip fails.")
@click.option("--progress-every", type=FiniteFloatRange(min=0, min_open=True, max=86400),
              envvar="AFFECT_PROGRESS_EVERY", show_envvar=True, default=30.0, show_default=True,
              help="Seconds between progress lines when stderr is not a terminal (logs, CI).")
@verbose_option
def extract(clips_file, media, dataset, data_root, store_url, encoders, weights, device,
            batch_size, threads, limit, fps, decode_size, resize_with, dtype, reduced,
            clips_per_part, decode_workers, decode_in, decoder, scheduler, scheduler_file,
            views, strict, progress_every) -> None:
    """Decode each clip once and write every requested encoder's features to the store."""
    from extract.clips import read_clips_file
    from extract.cluster import ClusterRequest
    from extract.report import ExtractOptions, format_report
    from extract.resume import already_done
    from extract.views import parse_views

    cluster = ClusterRequest.parse(scheduler, scheduler_file)
    if cluster is not None and data_root:
        data_root = os.path.abspath(data_root)  # workers run in other folders

    requests = _split_list(encoders)
    encoder_options: dict = {}
    sources = [f"--{name}" for name, given in (("clips", clips_file), ("media", media),
                                               ("dataset", dataset)) if given]
    if len(sources) > 1:
        raise UserError(f"give one of --clips, --media and --dataset, not {' and '.join(sources)}")
    if dataset:
        if not data_root:
            raise UserError("--dataset needs --data-root (the dataset folder)")
        from pipelines.datasets import get_adapter
        from pipelines.ingest import ingest

        adapter = get_adapter(dataset)
        store = open_store(store_url, dataset=dataset)
        ingest_report = ingest(adapter, data_root, store)
        click.echo(f"ingested: {ingest_report}")
        clips = adapter.scan(data_root).clips
        requests = requests or list(adapter.recipe.encoders)
        encoder_options = dict(adapter.recipe.encoder_options)
        fps = fps or adapter.recipe.fps
        if not clips:
            raise UserError(f"{data_root}: no clips found for dataset {dataset}")
    elif clips_file:
        clips = read_clips_file(clips_file)
        store = open_store(store_url)
        encoder_options = _dataset_encoder_options(store)
    elif media:
        from pipelines.media_clips import media_clips

        clips = media_clips(media)
        store = open_store(store_url)
        encoder_options = _dataset_encoder_options(store)
    else:
        raise UserError("give --clips FILE, --media FILE_OR_FOLDER or --dataset NAME "
                        "--data-root DIR")
    if not requests:
        raise UserError("no encoders: pass --encoders a,b,c (see `affect encoders ls`)")
    if weights == "random":
        click.echo("WARNING: random weights: features are for tests and smoke runs only; "
                   "the streams are marked as such.", err=True)
    options = ExtractOptions(
        encoders=requests, weights=weights, device=device, batch_size=batch_size,
        threads=threads, limit=limit,
        reduced=reduced, dtype=dtype, fps=fps or 25.0, decode_size=decode_size,
        clips_per_part=clips_per_part,
        decode_workers=decode_workers, decode_in=decode_in, decoder=decoder,
        resize_with=resize_with, strict=strict,
        encoder_options=encoder_options, views=parse_views(views),
    )
    # A rerun with nothing left to do is answered from the store's metadata alone (with
    # device auto, the runner decides the device first: that needs torch, or the cluster).
    report = already_done(clips[:limit] if limit else clips, store, options)
    if report is not None:
        click.echo(format_report(report))
        return
    if cluster is not None:
        from extract.dask_runner import run_extraction_dask
        from extract.report import interrupted_message

        try:
            report = run_extraction_dask(clips, store.url, options, cluster,
                                         storage_options=store.storage_options)
        except Interrupted:
            raise
        except KeyboardInterrupt as exc:
            raise Interrupted(interrupted_message(store.url)) from exc
    else:
        from extract.runner import resolve_device, run_extraction

        if device == "auto":
            options.device = resolve_device(device)
            report = already_done(clips[:limit] if limit else clips, store, options)
        if report is None:
            report = run_extraction(clips, store, options, progress_every_s=progress_every)
    click.echo(format_report(report))
    # Non-zero only when nothing could be extracted at all, or with --strict.
    if report.failed and (strict or report.done + report.skipped + report.partial == 0):
        sys.exit(1)


def _dataset_encoder_options(store) -> dict:
    """The encoder options of the recipe of the store's dataset (none for a store of no known
    dataset): new clips added to a dataset's store by name get the streams the recipe made
    (CREMA-D's HSEmotion on face crops), not a second stream of the same encoder."""
    from pipelines.datasets import get_adapter

    dataset = store.attrs.get("dataset")
    if not dataset:
        return {}
    try:
        return dict(get_adapter(dataset).recipe.encoder_options)
    except UserError:  # a dataset name no adapter knows: plain encoders
        return {}
