"""Ingest: a dataset folder -> the store's clip table, label streams, aux arrays and ledger.

    report = ingest(get_adapter("react"), "/data/react", open_store("react.zarr"))

Idempotent: a rerun writes nothing to a label stream that already holds the same labels, rewrites
aux arrays, adds only failures not already in the ledger, and finalizes. Label streams are keyed
like feature streams (name, dim, dtype, rate, preprocessing, adapter code version) and by a digest
of the labels themselves, so a changed adapter or a corrected label file writes a new stream
(which the alias then names) instead of keeping the old labels under the old key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features_store import FeatureStore, StreamInfo
from features_store.errors import UserError
from features_store.fingerprint import canonical_json

from .datasets.base import ADAPTER_CODE_VERSION, Adapter, LabelStream, ScanResult

INGEST_STAGE = "ingest"


@dataclass
class IngestReport:
    dataset: str
    data_root: str
    store: str
    clips: int = 0
    clips_per_split: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)  # alias -> clips in the stream now
    written: dict[str, int] = field(default_factory=dict)  # alias -> clips written this run
    stream_keys: dict[str, str] = field(default_factory=dict)
    aux: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    new_failures: int = 0
    excluded: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in sorted(self.clips_per_split.items()))
        lines = [f"{self.dataset}: {self.clips} clips ({splits or 'none'}) from {self.data_root}"]
        for alias, n in self.labels.items():
            lines.append(f"  label {alias}: {n} clips ({self.written.get(alias, 0)} new)")
        for name in self.aux:
            lines.append(f"  aux {name}")
        if self.excluded:
            lines.append(f"  {self.excluded} clips left out on purpose (outside the label set)")
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.problems:
            lines.append(f"  {len(self.problems)} problems (clips skipped, listed in the ledger "
                         f"{self.store}/ledger):")
        return "\n".join(lines)


def label_stream_info(dataset: str, spec: LabelStream) -> StreamInfo:
    extra: dict[str, Any] = {"description": spec.description, "dataset": dataset, **spec.extra}
    if spec.columns:
        extra["columns"] = list(spec.columns)
    if spec.classes:
        extra["classes"] = list(spec.classes)
    return StreamInfo(
        name=spec.alias,
        kind="label",
        dim=spec.dim,
        dtype=spec.dtype,
        frame_shift_s=spec.frame_shift_s,
        t0=0.0,
        alias=spec.alias,
        preprocessing={"dataset": dataset, **_jsonable(spec.preprocessing),
                       "labels_sha256": labels_digest(spec)},
        code_version=f"pipelines.{ADAPTER_CODE_VERSION}",
        claims={"all": True} if spec.every_clip else None,
        extra=_jsonable(extra),
    )


def labels_digest(spec: LabelStream) -> str:
    """sha256 over every clip's label rows, times and clip id: the labels' content, so that
    corrected labels are never mistaken for the ones already stored."""
    digest = hashlib.sha256()
    for clip_id in sorted(spec.rows):
        rows = spec.rows[clip_id]
        values = np.ascontiguousarray(rows.values, dtype=np.dtype(spec.dtype).newbyteorder("<"))
        digest.update(canonical_json([clip_id, list(values.shape), rows.t0, rows.t_end]).encode())
        digest.update(values.tobytes())
    return digest.hexdigest()[:32]


def ingest(adapter: Adapter, data_root: str | Path, store: FeatureStore,
           log: Callable[[str], None] | None = None, add_dataset: bool = False) -> IngestReport:
    """Scan `data_root` with `adapter` and write everything it found into `store`."""
    check_dataset(store, adapter.name, add_dataset)  # before scanning a large folder
    result = adapter.scan(data_root)
    return write_scan(result, store, log, add_dataset)


DATASETS_NOTE = "datasets"


def check_dataset(store: FeatureStore, dataset: str, add_dataset: bool) -> None:
    """A store holds one dataset unless a second was added on purpose (`--add-dataset`):
    two datasets' clip tables mixed by accident make every split and label count wrong."""
    first = store.attrs.get("dataset")
    added = store.get_note(DATASETS_NOTE) or []
    if first in (None, dataset) or dataset in added:
        return
    if not add_dataset:
        raise UserError(f"{store.url}: is a {first} store; ingesting {dataset} would mix the two "
                        f"clip tables; pass --add-dataset to add {dataset} on purpose, or use "
                        "another --store")
    store.put_note(DATASETS_NOTE, [*added, dataset])


def write_scan(result: ScanResult, store: FeatureStore,
               log: Callable[[str], None] | None = None, add_dataset: bool = False) -> IngestReport:
    check_dataset(store, result.dataset, add_dataset)
    report = IngestReport(dataset=result.dataset, data_root=result.data_root, store=store.url,
                          excluded=result.excluded, notes=list(result.notes),
                          problems=list(result.problems))
    _add_clips(store, result.clips)
    report.clips = len(result.clips)
    report.clips_per_split = result.clips_per_split()
    for alias, spec in result.labels.items():
        if not spec.rows:
            continue  # nothing of this kind in the folder (e.g. REACT without 3D_FV_files)
        info = store.create_stream(label_stream_info(result.dataset, spec))
        report.stream_keys[alias] = info.key
        done = store.committed_clip_ids(info.key)
        todo = sorted(c for c in spec.rows if c not in done)
        if todo:
            digest = hashlib.sha1("\n".join(todo).encode("utf-8")).hexdigest()[:12]
            with store.part_writer(info.key, part_id=f"labels-{digest}") as writer:
                for clip_id in todo:
                    rows = spec.rows[clip_id]
                    writer.write_clip(clip_id, rows.values, t0=rows.t0, t_end=rows.t_end)
        report.written[alias] = len(todo)
        report.labels[alias] = len(done | set(spec.rows))
        if log:
            log(f"{alias}: {len(todo)} clips written, {len(done)} already there")
    for name, aux in result.aux.items():
        store.put_aux(name, aux.array, attrs=_jsonable(aux.attrs))
        report.aux.append(name)
    report.new_failures = _add_failures(store, result)
    store.finalize()
    return report


_ABSENT = object()


def _add_clips(store: FeatureStore, clips: list[dict[str, Any]]) -> None:
    """Only records that are new or changed, so reruns do not pile up identical batches."""
    existing = {r["clip_id"]: r for r in store.clips()}
    changed = []
    for clip in clips:
        record = _jsonable(clip)
        old = existing.get(record["clip_id"]) or {}
        # Fields others added (extraction's clip definition) do not make a record "changed".
        if any(old.get(k, _ABSENT) != v for k, v in record.items()):
            changed.append(record)
    if changed:
        store.add_clips(changed)


def _add_failures(store: FeatureStore, result: ScanResult) -> int:
    def key(f: dict[str, Any]) -> tuple:
        return (f.get("clip_id"), f.get("file"), f.get("stage"), f.get("message"))

    seen = {key(f) for f in store.failures()}
    new = []
    for problem in result.problems:
        record = {"dataset": result.dataset, "stage": INGEST_STAGE, **problem}
        record.setdefault("clip_id", record.get("file"))
        if key(record) not in seen:
            seen.add(key(record))
            new.append(record)
    if new:
        store.add_failures(new)
    return len(new)


def _jsonable(value: Any) -> Any:
    """Plain JSON types (tuples -> lists, numpy scalars -> numbers), as the store keeps them."""
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
