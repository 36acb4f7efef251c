"""The feature store: one interface over the Zarr and HDF5 backends.

Layout under the store root (a directory, or an fsspec URL):

    store.json                      schema version, dataset, backend, created
    clips/batch-*.json, table.json  the clip table (batches merged by finalize)
    streams/<key>/stream.json       StreamInfo: provenance and shape of the stream
    streams/<key>/parts/part-<id>   [rows, D] arrays (backend-specific files)
    streams/<key>/manifests/part-<id>.json   commit markers, one per part
    streams/<key>/index.json        merged index, written by finalize
    aux/<name>.npy (+ .json)        whole arrays that are not per clip (e.g. REACT neighbours)
    ledger/*.json                   the failure ledger: clip, stage, message
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import align
from .backends import get_backend
from .backends.base import chunk_rows_for
from .errors import UserError
from .fsutil import exists, list_names, read_json, remove, url_to_fs, write_bytes_atomic, write_json
from .index import StreamIndex
from .manifest import SCHEMA_VERSION, ClipShape, PartManifest, StreamInfo
from .paths import check_clip_id
from .stream_array import StreamArray
from .writer import PartWriter, now_iso

StreamRef = str | StreamInfo

BACKEND_BY_SUFFIX = {".h5": "hdf5", ".hdf5": "hdf5", ".zarr": "zarr"}


def backend_for(url: str) -> str:
    for suffix, name in BACKEND_BY_SUFFIX.items():
        if url.rstrip("/").endswith(suffix):
            return name
    return "zarr"


def open_store(
    url: str,
    mode: str = "a",
    backend: str | None = None,
    dataset: str | None = None,
    compression: str | None = None,
) -> FeatureStore:
    """Open (mode "r") or open-or-create (mode "a") a store at a path or fsspec URL.

    The backend follows the suffix (`*.h5` -> HDF5, anything else -> Zarr v3) unless named.
    """
    if mode not in ("r", "a"):
        raise ValueError("mode must be 'r' or 'a'")
    return FeatureStore(str(url), mode, backend or backend_for(str(url)), dataset, compression)


class FeatureStore:
    def __init__(
        self, url: str, mode: str, backend: str, dataset: str | None, compression: str | None
    ) -> None:
        self.url = url.rstrip("/")
        self.mode = mode
        self.fs, self.path = url_to_fs(self.url)
        self.backend_name = backend
        self.compression = compression
        self.backend = get_backend(backend, url=self.url, compression=compression)
        self._indexes: dict[str, StreamIndex] = {}
        self._readers: dict[tuple[str, str], Any] = {}
        self._streams: dict[str, StreamInfo] | None = None
        meta_path = f"{self.path}/store.json"
        if self.fs.isfile(self.path):
            raise UserError(f"{self.url}: is a file, not a feature store (a store is a folder; "
                            "name a new or existing store folder)")
        if exists(self.fs, meta_path):
            self.attrs = read_json(self.fs, meta_path)
            stored = self.attrs.get("backend", backend)
            if stored != backend:
                self.backend_name = stored
                self.backend = get_backend(stored, url=self.url, compression=compression)
        elif mode == "r":
            raise UserError(f"{self.url}: not an affect feature store (no store.json)")
        else:
            self.attrs = {
                "schema": SCHEMA_VERSION,
                "backend": backend,
                "dataset": dataset,
                "created": now_iso(),
            }
            self.backend.init_store(self.attrs)
            write_json(self.fs, meta_path, self.attrs)

    def __repr__(self) -> str:
        return f"FeatureStore({self.url!r}, backend={self.backend_name!r})"

    # Pickling: handles are per process (DataLoader workers, dask tasks) -----------------
    def __getstate__(self) -> dict:
        return {"url": self.url, "mode": self.mode, "backend": self.backend_name,
                "compression": self.compression}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], state["mode"], state["backend"], None, state["compression"])

    def _writable(self) -> None:
        if self.mode == "r":
            raise UserError(f"{self.url}: opened read-only")

    def refresh(self) -> None:
        """Forget cached indexes and handles so parts committed by other processes show up."""
        self._indexes.clear()
        self._readers.clear()
        self._streams = None

    # Clip table -------------------------------------------------------------------------
    def add_clips(self, records: Iterable[dict[str, Any]]) -> int:
        """Add or update clip records (keyed by clip_id); returns how many were written."""
        self._writable()
        rows = []
        for record in records:
            check_clip_id(record.get("clip_id"), f"{self.url}: clip record {record!r}"[:300])
            rows.append(record)
        if rows:
            name = f"batch-{now_iso().replace(':', '')}-{uuid.uuid4().hex[:8]}.json"
            write_json(self.fs, f"{self.path}/clips/{name}", rows)
        return len(rows)

    def clips(self, split: str | None = None) -> list[dict[str, Any]]:
        """Every clip record (later additions override earlier ones), sorted by clip_id."""
        table: dict[str, dict] = {}
        base = f"{self.path}/clips"
        merged: list[str] = []
        if exists(self.fs, f"{base}/table.json"):
            data = read_json(self.fs, f"{base}/table.json")
            merged = data["batches"]
            table = {r["clip_id"]: r for r in data["clips"]}
        for name in list_names(self.fs, base):
            if name.startswith("batch-") and name not in merged:
                for record in read_json(self.fs, f"{base}/{name}"):
                    table[record["clip_id"]] = {**table.get(record["clip_id"], {}), **record}
        records = [table[k] for k in sorted(table)]
        if split is not None:
            records = [r for r in records if r.get("split") == split]
        return records

    def clip_ids(self, split: str | None = None) -> list[str]:
        return [r["clip_id"] for r in self.clips(split)]

    # Streams ----------------------------------------------------------------------------
    def create_stream(self, info: StreamInfo) -> StreamInfo:
        """Create the stream if new; the existing one if the same key exists (idempotent)."""
        self._writable()
        if not info.dim or info.dim < 1:
            raise ValueError(f"stream {info.name}: dim must be positive")
        np.dtype(info.dtype)
        info = info.with_key()
        path = f"{self._stream_dir(info.key)}/stream.json"
        if exists(self.fs, path):
            return StreamInfo.from_dict(read_json(self.fs, path))
        if not info.created:
            info.created = now_iso()
        self.backend.create_stream(info.key, info.to_dict())
        write_json(self.fs, path, info.to_dict())
        self._streams = None
        return info

    def streams(self, kind: str | None = None) -> list[StreamInfo]:
        if self._streams is None:
            found = {}
            for key in list_names(self.fs, f"{self.path}/streams"):
                path = f"{self._stream_dir(key)}/stream.json"
                if exists(self.fs, path):
                    found[key] = StreamInfo.from_dict(read_json(self.fs, path))
            self._streams = found
        infos = sorted(self._streams.values(), key=lambda s: (s.alias, s.created, s.key))
        return [s for s in infos if kind is None or s.kind == kind]

    def resolve(self, ref: StreamRef) -> StreamInfo:
        """A stream by key, alias (newest if several) or unique key prefix."""
        if isinstance(ref, StreamInfo):
            if ref.key:
                return ref
            ref = ref.alias
        streams = self.streams()
        for match in (
            [s for s in streams if s.key == ref],
            [s for s in streams if s.alias == ref],
            [s for s in streams if s.name == ref],
            [s for s in streams if s.key.startswith(ref)],
        ):
            if match:
                return max(match, key=lambda s: s.created)
        known = ", ".join(sorted({s.alias for s in streams})) or "none"
        raise UserError(f"{self.url}: no stream {ref!r} (streams: {known})")

    def _stream_dir(self, key: str) -> str:
        return f"{self.path}/streams/{key}"

    # Writing ----------------------------------------------------------------------------
    def part_writer(self, stream: StreamRef, part_id: str) -> PartWriter:
        self._writable()
        return PartWriter(self, self.resolve(stream), part_id)

    def _write_manifest(self, key: str, manifest: PartManifest) -> None:
        write_json(
            self.fs, f"{self._stream_dir(key)}/manifests/part-{manifest.part_id}.json",
            manifest.to_dict(),
        )
        self._indexes.pop(key, None)
        self._readers.pop((key, manifest.part_id), None)

    def committed_parts(self, stream: StreamRef) -> list[str]:
        key = self.resolve(stream).key
        names = list_names(self.fs, f"{self._stream_dir(key)}/manifests")
        return [n[len("part-") : -len(".json")] for n in names if n.endswith(".json")]

    def manifests(self, stream: StreamRef) -> list[PartManifest]:
        key = self.resolve(stream).key
        out = []
        for part in self.committed_parts(key):
            path = f"{self._stream_dir(key)}/manifests/part-{part}.json"
            try:
                out.append(PartManifest.from_dict(read_json(self.fs, path)))
            except (KeyError, TypeError) as exc:
                raise UserError(f"{path}: malformed manifest ({exc})") from None
        return out

    def finalize(self, prune_orphans: bool = False) -> None:
        """Merge manifests into each stream's index and compact the clip table.

        One process only. With `prune_orphans`, parts that have no manifest (left by killed
        writers) are deleted: only do that when no writer of this store is still running.
        """
        self._writable()
        self.refresh()
        for info in self.streams():
            manifests = self.manifests(info.key)
            index = StreamIndex.from_manifests(manifests, info.dim)
            write_json(self.fs, f"{self._stream_dir(info.key)}/index.json", index.to_dict())
            if prune_orphans:
                committed = set(index.parts)
                for part in self.backend.list_parts(info.key):
                    if part not in committed:
                        self.backend.delete_part(info.key, part)
        base = f"{self.path}/clips"
        batches = [n for n in list_names(self.fs, base) if n.startswith("batch-")]
        if batches:
            records = self.clips()
            write_json(self.fs, f"{base}/table.json", {"batches": batches, "clips": records})
        self.refresh()

    # Index and shapes -------------------------------------------------------------------
    def index(self, stream: StreamRef) -> StreamIndex:
        info = self.resolve(stream)
        cached = self._indexes.get(info.key)
        if cached is not None:
            return cached
        parts = self.committed_parts(info.key)
        index = None
        index_path = f"{self._stream_dir(info.key)}/index.json"
        if exists(self.fs, index_path):
            merged = StreamIndex.from_dict(read_json(self.fs, index_path))
            if merged.parts == sorted(parts):
                index = merged
        if index is None:
            index = StreamIndex.from_manifests(self.manifests(info.key), info.dim)
        self._indexes[info.key] = index
        return index

    def shape_manifest(self, stream: StreamRef) -> list[ClipShape]:
        """Per-clip shape and time span, from metadata only (no feature data is read)."""
        index = self.index(stream)
        return [index.shape(i) for i in range(len(index))]

    def committed_clip_ids(self, stream: StreamRef) -> set[str]:
        return set(self.index(stream).clip_ids)

    def has_clip(self, stream: StreamRef, clip_id: str) -> bool:
        return clip_id in self.index(stream)

    # Reading ----------------------------------------------------------------------------
    def _reader(self, key: str, part_id: str):
        reader = self._readers.get((key, part_id))
        if reader is None:
            reader = self.backend.part_reader(key, part_id)
            self._readers[(key, part_id)] = reader
        return reader

    @staticmethod
    def clip_frame_shift(info: StreamInfo, index: StreamIndex, i: int) -> float | None:
        """Seconds between rows of clip i: the stream's, or the clip's own where rates differ.

        Streams marked `extra["per_clip_frame_rate"]` (Aff-Wild2 labels follow each video's real
        frame rate) carry each clip's span in `t_end`, so its shift is span / rows.
        """
        n, t_end = int(index.n_rows[i]), index.t_end[i]
        if info.extra.get("per_clip_frame_rate") and t_end is not None and n > 0:
            return (float(t_end) - float(index.t0[i])) / n
        return info.frame_shift_s

    def _locate(self, stream: StreamRef, clip_id: str) -> tuple[StreamInfo, StreamIndex, int]:
        info = self.resolve(stream)
        index = self.index(info)
        i = index.position.get(clip_id)
        if i is None:
            raise UserError(f"{self.url}: stream {info.alias} has no clip {clip_id!r}")
        return info, index, i

    def read_clip(self, stream: StreamRef, clip_id: str) -> np.ndarray:
        info, index, i = self._locate(stream, clip_id)
        start = int(index.row_start[i])
        reader = self._reader(info.key, index.part_of[i])
        return np.asarray(reader.read(start, start + int(index.n_rows[i])))

    def read_window(self, stream: StreamRef, clip_id: str, start: int, length: int) -> np.ndarray:
        """Rows [start, start + length) of a clip, zero-padded where the clip has none."""
        data, _ = self.read_windows(stream, [(clip_id, start, length)])
        return data[0]

    def read_window_s(
        self, stream: StreamRef, clip_id: str, t_start: float, t_end: float
    ) -> np.ndarray:
        """The rows whose times fall in [t_start, t_end)."""
        info, index, i = self._locate(stream, clip_id)
        shift = self.clip_frame_shift(info, index, i)
        if shift is None:
            return self.read_clip(info, clip_id)
        t0 = float(index.t0[i])
        first = max(0, int(np.ceil((t_start - t0) / shift - 1e-9)))
        last = min(int(index.n_rows[i]), int(np.ceil((t_end - t0) / shift - 1e-9)))
        if last <= first:
            return np.zeros((0, info.dim), dtype=info.dtype)
        start = int(index.row_start[i])
        reader = self._reader(info.key, index.part_of[i])
        return np.asarray(reader.read(start + first, start + last))

    def read_windows(
        self, stream: StreamRef, windows: Sequence[tuple[str, int, int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Many windows in one call: `[(clip_id, start_row, length), ...]` -> (data, mask).

        Windows of one part that lie within about a chunk of each other are served by one
        read covering them all, so the per-call cost of the backend is paid per cluster of
        windows, not per window; far-apart windows (random training windows) are read one by
        one rather than by reading everything between them.
        """
        info = self.resolve(stream)
        index = self.index(info)
        length = max((w[2] for w in windows), default=0)
        out = np.zeros((len(windows), length, info.dim), dtype=info.dtype)
        mask = np.zeros((len(windows), length), dtype=bool)
        by_part: dict[str, list[tuple[int, int, int, int]]] = {}
        for b, (clip_id, start, n) in enumerate(windows):
            i = index.position.get(clip_id)
            if i is None:
                raise UserError(f"{self.url}: stream {info.alias} has no clip {clip_id!r}")
            lo, hi = max(0, start), min(int(index.n_rows[i]), start + n)
            if hi > lo:
                row = int(index.row_start[i])
                by_part.setdefault(index.part_of[i], []).append((b, row + lo, row + hi, lo - start))
        gap = chunk_rows_for(info.dim, info.dtype)
        for part, items in by_part.items():
            reader = self._reader(info.key, part)
            items.sort(key=lambda it: it[1])
            clusters = [[items[0]]]
            last = items[0][2]
            for item in items[1:]:
                if item[1] > last + gap:
                    clusters.append([])
                clusters[-1].append(item)
                last = max(last, item[2])
            for cluster in clusters:
                first, stop = cluster[0][1], max(c[2] for c in cluster)
                block = np.asarray(reader.read(first, stop))
                for b, lo, hi, offset in cluster:
                    out[b, offset : offset + hi - lo] = block[lo - first : hi - first]
                    mask[b, offset : offset + hi - lo] = True
        return out, mask

    def read_aligned(
        self,
        clip_id: str,
        streams: Sequence[StreamRef],
        frame_shift_s: float,
        t0: float = 0.0,
        n_frames: int | None = None,
        method: str | dict[str, str] = "nearest",
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Several streams of one clip on one timeline `t0 + k * frame_shift_s`.

        `method` is "nearest", "mean" (average of the rows inside each target frame) or
        "linear", or a dict stream -> method (named as in `streams`, or by alias). Returns
        ({stream as the caller named it: [T, D]}, mask [T]) where the mask is True where every
        stream has data; a StreamInfo passed in is named by its alias.
        """
        infos = [self.resolve(s) for s in streams]
        spans = []
        for info in infos:
            _, index, i = self._locate(info, clip_id)
            shift = self.clip_frame_shift(info, index, i)
            spans.append((float(index.t0[i]), int(index.n_rows[i]), index.t_end[i], shift))
        if n_frames is None:
            ends = [
                align.span_end(t0_s, n, shift, t_end)
                for t0_s, n, t_end, shift in spans
                if shift is not None
            ]
            end = min(ends) if ends else t0 + frame_shift_s
            n_frames = max(0, int(np.floor((end - t0) / frame_shift_s + 1e-6)))
        targets = t0 + np.arange(n_frames) * frame_shift_s
        out: dict[str, np.ndarray] = {}
        mask = np.ones(n_frames, dtype=bool)
        for ref, info, (src_t0, _, _, shift) in zip(streams, infos, spans):
            name = ref if isinstance(ref, str) else info.alias
            rows = self.read_clip(info, clip_id)
            how = (method.get(name, method.get(info.alias, "nearest"))
                   if isinstance(method, dict) else method)
            values, valid = align.to_timeline(rows, src_t0, shift, targets, frame_shift_s, how)
            out[name] = values
            mask &= valid
        return out, mask

    def load_stream(
        self, stream: StreamRef, clip_ids: Sequence[str] | None = None, cache_dir: str | None = None
    ) -> StreamArray:
        """The training fast path: the stream (or some clips of it) as one array in RAM.

        With `cache_dir`, the array is a numpy memmap file keyed by the stream's committed parts,
        so a changed stream never serves stale rows and repeated runs skip the copy.
        """
        info = self.resolve(stream)
        return StreamArray.from_store(self, info, self.index(info), clip_ids, cache_dir)

    # Aux arrays and the failure ledger ----------------------------------------------------
    def put_aux(self, name: str, array: np.ndarray, attrs: dict[str, Any] | None = None) -> None:
        self._writable()
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        write_bytes_atomic(self.fs, f"{self.path}/aux/{name}.npy", buffer.getvalue())
        write_json(self.fs, f"{self.path}/aux/{name}.json", attrs or {})

    def get_aux(self, name: str) -> tuple[np.ndarray, dict[str, Any]]:
        path = f"{self.path}/aux/{name}.npy"
        if not exists(self.fs, path):
            raise UserError(f"{self.url}: no aux array {name!r}")
        array = np.load(io.BytesIO(self.fs.cat_file(path)), allow_pickle=False)
        attrs_path = f"{self.path}/aux/{name}.json"
        attrs = read_json(self.fs, attrs_path) if exists(self.fs, attrs_path) else {}
        return array, attrs

    def aux_names(self) -> list[str]:
        base = f"{self.path}/aux"
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        return sorted(p[len(base) + 1 : -4] for p in found if p.endswith(".npy"))

    def put_note(self, name: str, obj: Any) -> None:
        """A small JSON document the extraction keeps beside the data (e.g. resolved plans)."""
        self._writable()
        write_json(self.fs, f"{self.path}/notes/{name}.json", obj)

    def get_note(self, name: str) -> Any | None:
        path = f"{self.path}/notes/{name}.json"
        return read_json(self.fs, path) if exists(self.fs, path) else None

    def add_failures(self, records: Iterable[dict[str, Any]]) -> None:
        self._writable()
        rows = [{"time": now_iso(), **r} for r in records]
        if rows:
            name = f"{now_iso().replace(':', '')}-{uuid.uuid4().hex[:8]}.json"
            write_json(self.fs, f"{self.path}/ledger/{name}", rows)

    def failures(self, history: bool = False) -> list[dict[str, Any]]:
        """The failure ledger now: the latest entry per (clip, stream), without clips that a
        later run committed to that stream. `history=True`: every entry ever written.

        Entries are only ever added (one file per batch, so writers never contend); what is
        current is worked out here, so a rerun neither duplicates entries nor keeps clips that
        have since succeeded.
        """
        out: list[dict[str, Any]] = []
        for name in list_names(self.fs, f"{self.path}/ledger"):  # names sort by time
            out.extend(read_json(self.fs, f"{self.path}/ledger/{name}"))
        if history:
            return out
        latest: dict[tuple, dict[str, Any]] = {}
        for record in out:
            stream = record.get("stream")
            # Entries without a stream (ingest problems) are told apart by stage and file.
            key = ((record.get("clip_id"), stream) if stream else
                   (record.get("clip_id"), None, record.get("stage"), record.get("file")))
            latest.pop(key, None)
            latest[key] = record
        known = {s.key for s in self.streams()}
        committed: dict[str, set[str]] = {}

        def succeeded(record: dict[str, Any]) -> bool:
            stream = record.get("stream")
            if not stream or stream not in known:
                return False
            if stream not in committed:
                committed[stream] = self.committed_clip_ids(stream)
            return record.get("clip_id") in committed[stream]

        return [r for r in latest.values() if not succeeded(r)]

    def ledger_path(self) -> str:
        return f"{self.url}/ledger"

    def delete_stream(self, stream: StreamRef) -> None:
        self._writable()
        remove(self.fs, self._stream_dir(self.resolve(stream).key))
        self.refresh()

    def nbytes(self, stream: StreamRef) -> int:
        info = self.resolve(stream)
        return int(self.index(info).n_rows.sum()) * info.dim * np.dtype(info.dtype).itemsize
