"""Finishing a rerun without building encoders.

A stream key is a fingerprint of the encoder (architecture, weights digest, preprocessing), so
knowing it normally means building the encoder: seconds of imports and model construction. After
each run the store remembers, per request, the key it resolved to, under a fingerprint of the
request itself (name, weights identity, options, rate, dtype, versions). A rerun whose requests
are all remembered, and whose clips are all committed under those keys, is answered from the
store's metadata alone. Weights from a library cache (`default`) are never remembered: the file
behind them can change without the request changing, so those runs always build and check.
"""

from __future__ import annotations

import os

from features_store import FeatureStore
from features_store.fingerprint import fingerprint

from . import versions
from .definition import needs_new_record
from .plan import compute_identity, parse_request, request_options
from .report import ExtractOptions, ExtractReport, StreamStats
from .views import split_view

NOTE_PREFIX = "plans/"


def _weights_identity(weights: str) -> str | None:
    if weights.startswith("random"):
        return weights
    if weights != "default" and os.path.exists(weights):
        stat = os.stat(weights)  # a replaced or edited file is a different request
        return f"{os.path.abspath(weights)}:{stat.st_size}:{stat.st_mtime_ns}"
    return None


def request_fingerprint(request: str, options: ExtractOptions) -> str | None:
    """The fingerprint of one requested stream, or None when it cannot be trusted offline.

    The device must be resolved ("cpu", "cuda"): "auto" means different streams on different
    machines."""
    weights = _weights_identity(options.weights)
    if weights is None or options.device == "auto":
        return None
    name, crop = parse_request(request)
    fields = {
        "name": name, "crop": crop, "weights": weights, "reduced": options.reduced,
        "options": {**options.encoder_options.get(name, {}), **request_options(request)},
        "fps": options.fps,
        "dtype": options.dtype, "decode_size": options.decode_size,
        "compute": compute_identity(options.device),
        "numerics": {"threads": options.threads, "batch_size": options.batch_size},
        "versions": versions.stream_key_versions(), "affect": _package_version(),
    }
    if options.decoder != "pyav":  # only then part of the stream key (see runner.build_plans)
        fields["decoder"] = options.decoder
    if options.resize_with != "pil":
        fields["resize_with"] = options.resize_with
    view = split_view(request)[1]
    if view:
        fields["view"] = view
    return fingerprint(fields)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("affect")
    except PackageNotFoundError:
        return "unknown"


def record_plans(store: FeatureStore, plans, options: ExtractOptions) -> None:
    """Remember which stream key each request resolved to (after the encoders were built)."""
    for plan in plans:
        request_fp = request_fingerprint(plan.request, options)
        if request_fp is not None:
            store.put_note(NOTE_PREFIX + request_fp, {
                "request": plan.request, "key": plan.info.key, "alias": plan.info.alias,
                "modality": plan.modality,
            })


def has_input(clip: dict, modality: str) -> bool:
    """Does the clip give this modality anything to encode?"""
    if modality == "text":
        return bool(clip.get("text"))
    if modality == "audio":
        return bool(clip.get("audio") or clip.get("video"))
    return bool(clip.get("video") or clip.get("frames"))


def already_done(clips: list[dict], store: FeatureStore,
                 options: ExtractOptions) -> ExtractReport | None:
    """A report of an all-skipped run if every requested stream is complete, else None."""
    if options.views:  # which requests are video (and get views) is known once encoders exist
        return None
    notes = []
    for request in options.encoders:
        request_fp = request_fingerprint(request, options)
        note = store.get_note(NOTE_PREFIX + request_fp) if request_fp else None
        if note is None or note["key"] not in {s.key for s in store.streams()}:
            return None
        notes.append(note)
    records = {r["clip_id"]: r for r in store.clips()}
    if any(needs_new_record(records.get(c["clip_id"]), c) for c in clips):
        return None  # a new or redefined clip: the full path records or refuses it
    for note in notes:
        committed = store.committed_clip_ids(note["key"])
        if any(c["clip_id"] not in committed for c in clips if has_input(c, note["modality"])):
            return None
    return ExtractReport(
        clips_total=len(clips), skipped=len(clips), ledger=store.ledger_path(),
        streams={n["key"]: StreamStats(n["alias"]) for n in notes},
    )
