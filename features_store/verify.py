"""`verify`: is the store sound? Lists every problem, naming the file it is in.

Checks, per stream: parts without a manifest (a killed writer's orphan), manifests that are not
valid JSON or name a missing array, manifest and array disagreeing in shape or dtype, clip rows
out of range or overlapping, chunk files that are missing or cannot be decoded (truncated or
corrupt), NaN/Inf values, clips of the clip table missing from a stream that claims them, and
clips a run recorded as intended (`record_intent`) that no part committed: so "ok" means every
stream is complete, not only sound. Metadata is checked against itself: each part's rows against
the checksum its writer recorded at commit (a flipped bit, a zeroed chunk, swapped parts), the
merged index against the manifests, each stream folder for its stream.json, and the clip table
for being there at all under extracted and ingested streams. A part whose writer is still
alive (live lease) and a clip that two racing runs both committed (the index keeps the first
commit) are notes, not problems.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import commit
from .errors import UserError
from .fsutil import exists, list_names
from .index import StreamIndex
from .manifest import PartManifest, StreamInfo, rows_bytes
from .store import FeatureStore, read_checked


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)  # alias -> intended, absent
    streams: int = 0
    parts: int = 0
    clips: int = 0  # clip-streams: a clip in five streams counts five times
    rows: int = 0
    clip_ids: set[str] = field(default_factory=set)  # distinct clips across the streams
    failed: int = 0  # clip-streams in the failure ledger (excused, so not problems)

    @property
    def ok(self) -> bool:
        return not self.problems


def _claimed_clips(store: FeatureStore, info: StreamInfo) -> list[str]:
    claims = info.claims or {}
    if claims.get("all"):
        return store.clip_ids()
    if "splits" in claims:
        return [c for s in claims["splits"] for c in store.clip_ids(s)]
    return list(claims.get("clip_ids", []))


def _current_of_alias(store: FeatureStore, info: StreamInfo) -> bool:
    try:
        return store.resolve(info.alias).key == info.key
    except UserError:
        return True


def verify(
    store: FeatureStore, check_values: bool = True, progress: Callable[[str], None] | None = None
) -> VerifyReport:
    report = VerifyReport()
    store.refresh()
    infos = store.streams()
    for _, why in sorted(store.damaged_streams.items()):
        report.problems.append(f"{why} (the stream's parts are unreadable until it is restored)")
    _check_stream_folders(store, {i.key for i in infos} | set(store.damaged_streams), report)
    try:
        table = set(store.clip_ids())
    except UserError as exc:
        report.problems.append(f"{exc} (the clip table is damaged)")
        table = None
    try:
        failures = store.failures()
    except UserError as exc:
        report.problems.append(f"{exc} (the failure ledger is damaged)")
        failures = []
    # A ledger entry names its stream by key (older entries by `stream`, or by none: the clip).
    failed = {(f.get("clip_id"), f.get("stream_key", f.get("stream"))) for f in failures}
    for info in infos:
        report.streams += 1
        if progress:
            progress(info.alias)
        _verify_stream(store, info, report, failed, check_values, table)
    return report


def _check_stream_folders(store: FeatureStore, known: set[str], report: VerifyReport) -> None:
    """A stream folder holding parts or manifests but no stream.json: a stream that vanished
    from every listing (its stream.json was deleted)."""
    for key in list_names(store.fs, f"{store.path}/streams"):
        base = f"{store.path}/streams/{key}"
        if key in known or not store.fs.isdir(base):  # zarr's own group file sits here too
            continue
        held = [n for n in ("manifests", "parts") if list_names(store.fs, f"{base}/{n}")]
        if held and not exists(store.fs, f"{base}/stream.json"):
            report.problems.append(f"{base}: has {' and '.join(held)} but no stream.json (the "
                                   "stream's metadata was deleted; its data is invisible)")


def _verify_stream(
    store: FeatureStore, info: StreamInfo, report: VerifyReport, failed: set, check_values: bool,
    table: set[str] | None,
) -> None:
    key = info.key
    base = f"{store.path}/streams/{key}"
    committed = store.committed_parts(info)
    arrays = set(store.backend.list_parts(key))
    for orphan in sorted(arrays - set(committed)):
        location = store.backend.part_location(key, orphan)
        lease = commit.live_lease(store, key, orphan)
        if lease is not None:
            report.notes.append(f"{location}: being written (run {lease.run_id}, pid "
                                f"{lease.pid} on {lease.host})")
            continue
        report.problems.append(
            f"{location}: part without manifest "
            "(an interrupted writer; rerun the extraction or `finalize --prune`)"
        )
    manifests: list[PartManifest] = []
    for part in committed:
        try:
            manifests.append(store._read_manifest(key, part))
        except UserError as exc:
            path = f"{base}/manifests/part-{part}.json"
            reason = str(exc).removeprefix(f"{path}: ")
            report.problems.append(f"{path}: unreadable manifest ({reason})")
        except FileNotFoundError:
            continue  # deleted meanwhile (a stream being removed)
    seen: dict[str, str] = {}
    # Which copy readers use when racing runs committed a clip twice: the first commit.
    first_commit: dict[str, str] = {}
    for manifest in sorted(manifests, key=lambda m: m.commit_order()):
        for entry in manifest.clips:
            first_commit.setdefault(entry.clip_id, manifest.part_id)
    for manifest in manifests:
        report.parts += 1
        mpath = f"{base}/manifests/part-{manifest.part_id}.json"
        location = store.backend.part_location(key, manifest.part_id)
        if manifest.part_id not in arrays:
            report.problems.append(f"{mpath}: manifest names a missing array {location}")
            continue
        try:
            reader = store.backend.part_reader(key, manifest.part_id)
        except UserError as exc:  # already one line naming the file
            report.problems.append(str(exc))
            continue
        except Exception as exc:  # any backend failure to open is a finding, not a crash
            report.problems.append(f"{location}: cannot open array ({type(exc).__name__}: {exc})")
            continue
        rows, dim = reader.shape
        if dim != info.dim or manifest.dim != info.dim:
            report.problems.append(
                f"{mpath}: dim {manifest.dim} / array dim {dim} / stream dim {info.dim} disagree"
            )
        if rows != manifest.n_rows:
            report.problems.append(
                f"{mpath}: manifest says {manifest.n_rows} rows, array {location} has {rows}"
            )
        if np.dtype(reader.dtype) != np.dtype(info.dtype):
            report.problems.append(f"{location}: dtype {reader.dtype}, stream says {info.dtype}")
        # An array whose own metadata disagrees with its manifest (a tampered zarr.json claiming
        # 2^40 rows) is reported above; its chunks are not walked, which would never end.
        array_matches = rows == manifest.n_rows and dim == info.dim
        spans = []
        for entry in manifest.clips:
            end = entry.row_start + entry.n_rows
            if entry.row_start < 0 or entry.n_rows < 0 or end > rows:
                report.problems.append(
                    f"{mpath}: clip {entry.clip_id!r} rows {entry.row_start}:{end} out of "
                    f"range of {rows} rows"
                )
            spans.append((entry.row_start, end, entry.clip_id))
            if entry.clip_id in seen:
                winner = first_commit[entry.clip_id]
                other = seen[entry.clip_id] if winner == manifest.part_id else manifest.part_id
                report.notes.append(
                    f"{base}: clip {entry.clip_id!r} committed by parts {winner} and {other} "
                    f"(racing runs); readers use part {winner}, the first commit")
            seen.setdefault(entry.clip_id, manifest.part_id)
        spans.sort()
        for (_, end_a, clip_a), (start_b, _, clip_b) in zip(spans, spans[1:]):
            if start_b < end_a:
                report.problems.append(f"{mpath}: clips {clip_a!r} and {clip_b!r} overlap")
        report.clips += len(manifest.clips)
        report.clip_ids.update(entry.clip_id for entry in manifest.clips)
        report.rows += rows
        if not array_matches:
            continue
        missing_chunks = getattr(reader, "missing_chunks", None)
        for chunk in missing_chunks() if missing_chunks else []:
            report.problems.append(f"{chunk}: chunk file missing (it would read as zeros)")
        if check_values:
            digest = _scan_values(reader, report)
            if manifest.sha256 and digest is not None and digest != manifest.sha256:
                report.problems.append(
                    f"{location}: rows do not match the checksum recorded at commit in {mpath} "
                    "(the array was changed or replaced after it was written)")
    _check_index(store, info, manifests, committed, report)
    # Extraction and ingest add every clip they commit to the clip table, so an empty table
    # under such a stream means the table was deleted (clips written through the Python API
    # alone need no record, so neither those streams nor a partial table are judged).
    if table == set() and seen and store.expects_clip_table(info):
        report.problems.append(
            f"{base}: stream {info.alias} holds {len(seen)} committed clip(s) but the clip table "
            f"({store.path}/clips) is empty: it was deleted or damaged")
    report.failed += sum(1 for clip_id, stream in failed
                         if stream == key and clip_id not in seen)

    def excused(clip_id: str) -> bool:
        return clip_id in seen or (clip_id, key) in failed or (clip_id, None) in failed

    # A stream superseded under its alias (labels re-ingested after a correction) is history:
    # only the stream the alias names now must hold every clip it claims.
    current = _current_of_alias(store, info)
    for clip_id in _claimed_clips(store, info) if current else []:
        if not excused(clip_id):
            report.problems.append(
                f"{base}: clip {clip_id!r} of the clip table is missing from stream {info.alias}"
            )
    intended = store.intended_clip_ids(info)
    missing = sorted(c for c in intended if not excused(c))
    if missing:
        report.missing[info.alias] = missing
        shown = ", ".join(repr(c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        report.problems.append(
            f"{base}: stream {info.alias} is incomplete: {len(missing)} of {len(intended)} "
            f"intended clip(s) not committed ({shown}); rerun the extraction to finish it")


def _check_index(store: FeatureStore, info: StreamInfo, manifests: list[PartManifest],
                 committed: list[str], report: VerifyReport) -> None:
    """The merged index.json says what the manifests say (readers trust it while it lists the
    committed parts: a tampered one would serve other rows or times)."""
    path = f"{store.path}/streams/{info.key}/index.json"
    if not exists(store.fs, path):
        return
    try:
        merged = read_checked(store.fs, path, StreamIndex.from_dict)
    except UserError as exc:
        report.problems.append(f"{exc} (a damaged index; `affect store finalize` rewrites it)")
        return
    if merged.parts != sorted(committed) or len(manifests) != len(committed):
        return  # stale (parts committed since): readers merge the manifests instead
    truth = StreamIndex.from_manifests(manifests, info.dim)
    expected = {c: truth.shape(i) for i, c in enumerate(truth.clip_ids)}
    found = {c: merged.shape(i) for i, c in enumerate(merged.clip_ids)}
    wrong = sorted(c for c in expected.keys() | found.keys()
                   if expected.get(c) != found.get(c))
    if wrong or merged.dim != info.dim:
        shown = ", ".join(repr(c) for c in wrong[:5]) + (" ..." if len(wrong) > 5 else "")
        report.problems.append(
            f"{path}: disagrees with the committed manifests for {len(wrong)} clip(s) ({shown});"
            " readers would serve the wrong rows; `affect store finalize` rewrites it")


def _scan_values(reader, report: VerifyReport) -> str | None:
    """Scan every chunk for NaN/Inf; returns the sha256 of the rows as committed checksums
    cover them, or None where a chunk could not be read."""
    digest = hashlib.sha256()
    expected_start = 0
    for start, stop, location in reader.chunk_ranges():
        try:
            block = np.asarray(reader.read(start, stop))
        except Exception as exc:  # a chunk that will not decode is exactly what we look for
            cause = exc.__cause__ if isinstance(exc, UserError) and exc.__cause__ else exc
            report.problems.append(
                f"{location}: unreadable chunk ({type(cause).__name__}: {cause})"
            )
            digest = None
            continue
        if digest is not None and start == expected_start:
            digest.update(rows_bytes(block))
            expected_start = stop
        else:
            digest = None
        if block.dtype.kind == "f":
            bad = ~np.isfinite(block)
            if bad.any():
                row = int(np.argwhere(bad)[0][0]) + start
                report.problems.append(
                    f"{location}: {int(bad.sum())} NaN/Inf value(s), first at row {row}"
                )
    return None if digest is None else digest.hexdigest()
