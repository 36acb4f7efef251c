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

How a head's data is pointed at another store is head-specific; `MEDIA_DATA` holds one small
function per data type, and a head without one is refused in one line.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from features_store import StreamInfo, open_store
from features_store.errors import UserError
from features_store.paths import safe_join

PREDICT_SPLIT = "predict"
MEDIA_SUFFIXES = (".mp4", ".avi", ".flv", ".mkv", ".mov", ".webm", ".wav", ".mp3", ".flac",
                  ".m4a", ".ogg")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a", ".ogg")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


# --- what to predict on -----------------------------------------------------------------------

def media_clips(media: str) -> list[dict]:
    """Clips for a media file, a frame folder, a folder of media files, or a clips.jsonl."""
    from extract.clips import read_clips_file

    path = Path(media)
    if not path.exists():
        raise UserError(f"{media}: no such file or folder")
    if path.is_file() and path.suffix.lower() in (".jsonl", ".json"):
        clips = read_clips_file(str(path))
    elif path.is_file():
        clips = [_clip_for(path)]
    else:
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        if any(p.suffix.lower() in FRAME_SUFFIXES for p in entries if p.is_file()):
            clips = [{"clip_id": path.name, "frames": str(path.resolve())}]
        else:
            clips = [_clip_for(p) for p in entries
                     if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES]
        if not clips:
            raise UserError(f"{media}: no media files ({', '.join(MEDIA_SUFFIXES)}) or frame "
                            "images in this folder")
    return [{**clip, "split": PREDICT_SPLIT} for clip in clips]


def _clip_for(path: Path) -> dict:
    field = "audio" if path.suffix.lower() in AUDIO_SUFFIXES else "video"
    return {"clip_id": path.stem, field: str(path.resolve())}


# --- the run's streams and how they were made -------------------------------------------------

@dataclasses.dataclass
class StreamRequest:
    """How to extract one feature stream again, read from its provenance."""

    info: StreamInfo            # the stream as the training store records it
    options: Any                # extract.report.ExtractOptions for this stream alone


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
        options = ExtractOptions(
            encoders=[request], weights=_weights_for(info, given_weights), device=device,
            reduced=bool(arch.get("reduced", False)), dtype=info.dtype,
            fps=float(pre.get("fps") or 25.0), decode_size=pre.get("decode_shorter_side"),
            decoder=pre.get("decoder", "pyav"), resize_with=pre.get("resize_with", "pil"),
            encoder_options=({info.name: _encoder_options(info.name, encoder.get("options"))}),
        )
        requests.append(StreamRequest(info, options))
    if not requests:
        raise UserError("the run reads no feature streams: nothing to extract for new media")
    return requests


def _encoder_options(name: str, recorded: dict | None) -> dict:
    """The recorded options the encoder accepts as arguments (the rest show up in the key)."""
    from extract.encoders import _entry

    accepted = _entry(name).options
    return {k: v for k, v in (recorded or {}).items() if k in accepted}


def check_same_streams(requests: list[StreamRequest], device: str) -> list:
    """Build each encoder and refuse unless it resolves to the key the run was trained on."""
    from extract.runner import build_plans

    all_plans = []
    for request in requests:
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


# --- pointing a head's data at the new store --------------------------------------------------

def _family_data(data, store):
    # Transformer family: splits load lazily from `store`; keep the train mean/std.
    return dataclasses.replace(data, store=store, splits={})


MEDIA_DATA: dict[str, Callable[[Any, Any], Any]] = {"FamilyData": _family_data}


def media_data(head, data, store):
    adapt = MEDIA_DATA.get(type(data).__name__)
    if adapt is None:
        raise UserError(f"head {head.name} cannot predict on new media yet (its data type "
                        f"{type(data).__name__} has no entry in pipelines.predict_media."
                        "MEDIA_DATA); ingest the media and use `affect predict --split`")
    return adapt(data, store)


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
    check_same_streams(requests, dev)

    out.mkdir(parents=True, exist_ok=True)
    scratch = open_store(store_url or str(out / "store.zarr"))
    for key in keys:  # label streams exist (empty), so the head resolves them as in training
        info = run.store.resolve(key)
        if info.kind != "feature":
            scratch.create_stream(info)
    for request in requests:
        report = run_extraction(clips, scratch, request.options, progress=progress)
        if report.failures:
            first = report.failures[0]
            raise UserError(f"{first['message']} (stream {request.info.alias}; "
                            f"{len(report.failures)} clip(s) failed, see {report.ledger})")
    scratch.refresh()
    data = media_data(run.head, run.data, scratch)
    predictions = predict_model(run.head, run.model, data, PREDICT_SPLIT)
    files = write_predictions(predictions, data, out, run.head)
    try:
        files += [str(p) for p in run.head.export(predictions, data, PREDICT_SPLIT,
                                                  out / "export")]
    except (UserError, NotImplementedError):
        pass  # a head without an export format still gets the CSVs and the plot
    summary = {"run": str(run_dir), "head": run.head.name, "clips": len(predictions),
               "store": scratch.url, "out": str(out), "files": files}
    (out / "predictions.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_predictions(predictions: dict[str, np.ndarray], data, out: Path, head) -> list[str]:
    """One CSV per clip (time, one column per output) and one plot of every clip."""
    shift = _frame_shift(data)
    columns = _columns(head, predictions)
    files = []
    (out / "clips").mkdir(exist_ok=True)
    for clip_id, values in predictions.items():
        values = np.asarray(values, np.float32)
        if values.ndim == 1:
            values = values[:, None] if shift is not None else values[None, :]
        path = safe_join(out / "clips", clip_id, suffix=".csv")  # a clip id of a/b: a folder
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["time_s", *columns[: values.shape[-1]]])
            for i, row in enumerate(values.reshape(len(values), -1)):
                time = "" if shift is None else f"{i * shift:.4f}"
                writer.writerow([time, *(f"{v:.6f}" for v in row)])
        files.append(str(path))
    files.append(str(plot_predictions(predictions, shift, columns, out / "predictions.png")))
    return files


def _frame_shift(data) -> float | None:
    for seqs in getattr(data, "splits", {}).values():
        shift = getattr(seqs, "frame_shift_s", None)
        if shift:
            return float(shift)
    return None


def _columns(head, predictions) -> list[str]:
    width = max((np.asarray(v).shape[-1] for v in predictions.values()), default=0)
    if width == 2 and "va" in (getattr(head.config, "labels", "") or "").lower():
        return ["valence", "arousal"]
    return [f"output_{i}" for i in range(width)]


def plot_predictions(predictions: dict[str, np.ndarray], shift: float | None,
                     columns: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(predictions))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.4 * n), squeeze=False)
    for ax, (clip_id, values) in zip(axes[:, 0], predictions.items()):
        values = np.asarray(values, np.float32).reshape(len(values), -1)
        times = np.arange(len(values)) * (shift or 1.0)
        for k in range(values.shape[1]):
            ax.plot(times, values[:, k], label=columns[k] if k < len(columns) else str(k))
        ax.set_title(clip_id, fontsize=9)
        ax.set_xlabel("time (s)" if shift else "row")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


__all__ = ["predict_media", "media_clips", "stream_requests", "check_same_streams",
           "MEDIA_DATA", "PREDICT_SPLIT"]
