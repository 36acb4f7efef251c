"""`affect predict --run RUN --media ...`: a trained head on media it has never seen.

A run's config.json records the stream keys it was trained on, and each stream in the training
store records what made its values (encoder, architecture, weights digest, preprocessing, frame
rate, crop, decode size, decoder). From that provenance this module rebuilds the same extraction
request for every feature stream, builds the encoders and checks that each resolves to the very
key the run was trained on (the key is a fingerprint of everything that determines the values,
so equal keys mean equal features); if one does not (other weights, a changed preprocessing) it
refuses with one line saying which stream and what to pass. Then it extracts exactly those
streams for the new media into a scratch store (or a store the user names), points the head's
data at that store (keeping the training split's normalisation), predicts, and writes one CSV per
clip, the head's own export format and a plot.

Every head says how to predict clips that are not in its training splits (`Head.predict_data`:
what training learned, such as normalisation statistics, stays the run's) and how its
predictions read as one table per clip (`Head.prediction_tables`); so `--media` gives the same
predictions as ingesting the media into a store, extracting and `affect predict --split`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from features_store import StreamInfo, open_store
from features_store.errors import UserError
from features_store.paths import safe_join
from heads.prediction_table import PredictionTable

PREDICT_SPLIT = "predict"


# --- what to predict on -----------------------------------------------------------------------

def media_clips(media: str) -> list[dict]:
    """Clips for a media file, a frame folder, a folder of media files, or a clips.jsonl, in the
    split predictions are made for."""
    from pipelines.media_clips import media_clips as clips_of

    return [{**clip, "split": PREDICT_SPLIT} for clip in clips_of(media)]


# --- the run's streams and how they were made -------------------------------------------------

@dataclasses.dataclass
class StreamRequest:
    """How to extract one feature stream again, read from its provenance."""

    info: StreamInfo            # the stream as the training store records it
    options: Any                # extract.report.ExtractOptions for this stream alone
    # Other options to try when `options` does not give the recorded key (a store written before
    # streams recorded the encoder's arguments: see `_encoder_arguments`).
    fallbacks: list = dataclasses.field(default_factory=list)


def _weights_for(info: StreamInfo, given: dict[str, str]) -> str:
    """The `--weights` value that rebuilds this stream's encoder (the key check confirms it)."""
    if info.name in given:
        return given[info.name]
    source = info.weights or "default"
    if source.startswith("random") or os.path.isabs(source) or os.path.exists(source):
        return source  # a missing file fails in the check, with what to pass instead
    return "default"  # a hub id or a library's tag: the library's own cache


def stream_requests(training_store, keys: list[str], given_weights: dict[str, str],
                    device: str) -> list[StreamRequest]:
    from extract.report import ExtractOptions

    requests = []
    for key in keys:
        info = training_store.resolve(key)
        if info.kind != "feature":
            continue
        encoder = (info.preprocessing or {}).get("encoder")
        if not encoder:
            raise UserError(f"stream {info.alias} ({key[:12]}) records no encoder provenance; "
                            "it cannot be extracted again for new media")
        pre = info.preprocessing
        crop = pre.get("crop")
        request = info.name + (f"@{crop}" if crop else "")
        arch = encoder.get("arch") or {}
        candidates = [
            ExtractOptions(
                encoders=[request], weights=_weights_for(info, given_weights), device=device,
                reduced=bool(arch.get("reduced", False)), dtype=info.dtype,
                fps=float(pre.get("fps") or 25.0), decode_size=pre.get("decode_shorter_side"),
                decoder=pre.get("decoder", "pyav"), resize_with=pre.get("resize_with", "pil"),
                encoder_options={info.name: arguments})
            for arguments in _encoder_arguments(info)]
        requests.append(StreamRequest(info, candidates[0], candidates[1:]))
    if not requests:
        raise UserError("the run reads no feature streams: nothing to extract for new media")
    return requests


def _encoder_arguments(info: StreamInfo) -> list[dict]:
    """The encoder's keyword arguments to try, most likely first.

    A stream records the arguments its encoder was built with (`extra["arguments"]`). Its
    recorded `options` are not arguments: they are the resolved values that enter the key (a
    PCA file's digest, the activation a weights tag implies), so they are only a guess for a
    store written before the arguments were recorded: the defaults first, then the recorded
    options the encoder accepts, minus values that name an identity rather than a choice.
    """
    from extract.encoders import _entry

    if "arguments" in (info.extra or {}):
        return [dict(info.extra["arguments"] or {})]
    accepted = _entry(info.name).options
    recorded = ((info.preprocessing or {}).get("encoder") or {}).get("options") or {}
    guess = {k: v for k, v in recorded.items() if k in accepted and not (
        isinstance(v, str) and v.startswith(("random:", "sha256:")))}
    return [{}, guess] if guess else [{}]


def check_same_streams(requests: list[StreamRequest], device: str) -> list:
    """Build each encoder and refuse unless it resolves to the key the run was trained on."""
    from extract.runner import build_plans

    all_plans = []
    for request in requests:
        if request.fallbacks and _key_of(request.options, device) != request.info.key:
            # an older store: the first guess that gives the key (else the refusal below)
            request.options = next((o for o in request.fallbacks
                                    if _key_of(o, device) == request.info.key), request.options)
        try:
            plans = build_plans(request.options, device)
        except UserError as exc:
            raise UserError(f"stream {request.info.alias}: cannot rebuild its encoder "
                            f"({exc}); pass --weights {request.info.name}=PATH") from None
        plan = plans[0]
        key = plan.info.with_key().key  # what the store will name the stream
        recorded_compute = (request.info.preprocessing or {}).get("compute")
        here_compute = plan.info.preprocessing.get("compute")
        if key != request.info.key and recorded_compute and recorded_compute != here_compute:
            raise UserError(
                f"stream {request.info.alias}: the run's features were computed with "
                f"{recorded_compute}, this run would compute them with {here_compute}; pass "
                "--device to match (the values differ between precisions)")
        if key != request.info.key:
            recorded = request.info.weights_sha256 or request.info.weights
            raise UserError(
                f"stream {request.info.alias}: the run was trained on features from weights "
                f"{recorded} ({request.info.key}), but the encoder available here "
                f"({request.options.weights}) gives stream {key}; pass "
                f"--weights {request.info.name}=PATH with the same weights file")
        all_plans.append(plans)
    return all_plans


def _key_of(options, device: str) -> str | None:
    from extract.runner import build_plans

    try:
        return build_plans(options, device)[0].info.with_key().key
    except UserError:
        return None


# --- what the new media must give ---------------------------------------------------------

def check_inputs(clips: list[dict], all_plans: list) -> None:
    """Refuse in one line when a clip cannot give a stream the run reads (a transcript for a
    text stream, pictures for a video stream): extraction would skip it and the head would
    find no clip with every stream."""
    from extract.resume import has_input

    needs = {"text": 'a "text" field with its transcript',
             "video": 'a "video" file or a "frames" folder',
             "audio": 'an "audio" or "video" file'}
    for plans in all_plans:
        plan = plans[0]
        for clip in clips:
            if not has_input(clip, plan.modality):
                raise UserError(
                    f"{clip.get('video') or clip.get('audio') or clip['clip_id']}: the run reads "
                    f"stream {plan.info.alias} ({plan.modality}), and clip {clip['clip_id']!r} "
                    f"has nothing for it; give --media a clips.jsonl whose lines have "
                    f"{needs[plan.modality]}")


def parse_weights(items) -> dict[str, str]:
    """`--weights ENCODER=PATH` items as a dict."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--weights {item!r}: expected ENCODER=PATH")
        out[name.strip()] = path.strip()
    return out


# --- the whole command ------------------------------------------------------------------------

def predict_media(run_dir: str, media: str, out_dir: str | None = None,
                  store_url: str | None = None, device: str = "auto",
                  weights: dict[str, str] | None = None, progress: bool = True) -> dict:
    """Extract the run's streams for `media`, predict with its best checkpoint, write results."""
    from extract.runner import resolve_device, run_extraction
    from heads.trainer import load_run, predict_model, read_run_config

    saved = read_run_config(run_dir)
    out = Path(out_dir) if out_dir else Path(run_dir) / "predictions" / "media"
    clips = media_clips(media)
    dev = resolve_device(device)
    run = load_run(run_dir, device=dev)
    keys = list((saved.get("streams") or {}).values())
    requests = stream_requests(run.store, keys, weights or {}, dev)
    check_inputs(clips, check_same_streams(requests, dev))

    out.mkdir(parents=True, exist_ok=True)
    scratch = open_store(store_url or str(out / "store.zarr"))
    for key in keys:  # label streams exist (empty), so the head resolves them as in training
        info = run.store.resolve(key)
        if info.kind != "feature":
            scratch.create_stream(info)
    for request in requests:
        # A few new clips: the bar on a terminal, and no timed log lines (whose closing
        # `extract: 1/1 clips` line only repeated what the summary says).
        report = run_extraction(clips, scratch, request.options, progress=progress,
                                progress_every_s=None)
        if report.failures:
            first = report.failures[0]
            raise UserError(f"{first['message']} (stream {request.info.alias}; "
                            f"{len(report.failures)} clip(s) failed, see {report.ledger})")
    scratch.refresh()
    data = run.head.predict_data(run.data, scratch, PREDICT_SPLIT)
    predictions = predict_model(run.head, run.model, data, PREDICT_SPLIT)
    tables = run.head.prediction_tables(predictions, data, PREDICT_SPLIT)
    files = write_tables(tables, out / "clips")
    files.append(str(plot_tables(tables, out / "predictions.png")))
    try:
        files += [str(p) for p in run.head.export(predictions, data, PREDICT_SPLIT,
                                                  out / "export")]
    except (UserError, NotImplementedError):
        pass  # a head without an export format still gets the CSVs and the plot
    summary = {"run": str(run_dir), "head": run.head.name, "clips": len(tables),
               "store": scratch.url, "out": str(out), "files": files}
    (out / "predictions.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_tables(tables: dict[str, PredictionTable], folder: Path) -> list[str]:
    """One CSV per clip: [time_s,] [sample,] then the table's columns (class tables start with
    the predicted class)."""
    files = []
    for clip_id, table in tables.items():
        path = safe_join(folder, clip_id, suffix=".csv")  # a clip id of a/b: a folder
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (["time_s"] if table.time_s is not None else []) \
            + (["sample"] if table.sample is not None else []) \
            + (["predicted"] if table.kind == "classes" else []) + list(table.columns)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for r, row in enumerate(table.values):
                lead = ([f"{table.time_s[r]:.4f}"] if table.time_s is not None else []) \
                    + ([int(table.sample[r])] if table.sample is not None else []) \
                    + ([table.columns[int(np.argmax(row))]] if table.kind == "classes" else [])
                writer.writerow([*lead, *(f"{v:.6f}" for v in row)])
        files.append(str(path))
    return files


# Channels drawn for a table with many columns (REGNN's 25 reaction attributes): the affect
# dimensions when present, else the first few.
PLOTTED = ("valence", "arousal")
MAX_LINES = 4


def plot_tables(tables: dict[str, PredictionTable], path: Path) -> Path:
    """One panel per clip: outputs over time (each generated sample thinly) or class bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(tables))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.4 * n), squeeze=False)
    for ax, (clip_id, table) in zip(axes[:, 0], tables.items()):
        ax.set_title(clip_id, fontsize=9)
        if table.kind == "classes":
            ax.barh(table.columns, table.values[0])
            ax.set_xlim(0, 1)
            ax.set_xlabel("probability")
            continue
        shown = [c for c in table.columns if c in PLOTTED] or table.columns[:MAX_LINES]
        samples = table.sample if table.sample is not None else np.zeros(len(table.values), int)
        for k, name in enumerate(shown):
            column = table.columns.index(name)
            for s in np.unique(samples):
                rows = samples == s
                times = table.time_s[rows] if table.time_s is not None else np.arange(rows.sum())
                ax.plot(times, table.values[rows, column], color=f"C{k}",
                        alpha=1.0 if table.sample is None else 0.5,
                        label=name if s == samples[0] else None)
        ax.set_xlabel("time (s)" if table.time_s is not None else "row")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


__all__ = ["predict_media", "media_clips", "stream_requests", "check_same_streams",
           "check_inputs", "write_tables", "plot_tables", "PREDICT_SPLIT"]
