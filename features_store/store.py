"""The feature store: one interface over the Zarr and HDF5 backends.

Layout under the store root (a directory, or an fsspec URL):

    store.json                      schema version, dataset, backend, created
    clips/batch-*.json, table.json  the clip table (batches merged by finalize)
    streams/<key>/stream.json       StreamInfo: provenance and shape of the stream
    streams/<key>/parts/part-<id>   [rows, D] arrays (backend-specific files)
    streams/<key>/leases/part-<id>.json      a live writer's lease (see commit.py)
    streams/<key>/manifests/part-<id>.json   commit markers, one per part
    streams/<key>/intents/<run>.json         the clips a run set out to extract (verify)
    streams/<key>/index.json        merged index, written by finalize
    aux/<name>.npy (+ .json)        whole arrays that are not per clip (e.g. REACT neighbours)
    ledger/*.json                   the failure ledger: clip, stage, message
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from . import align, commit
from .backends import get_backend
from .backends.base import chunk_rows_for, known_backends
from .errors import UserError
from .fingerprint import fingerprint
from .fsutil import (
    create_exclusive,
    exists,
    is_local,
    list_names,
    read_json,
    remove,
    storage_options_for,
    url_to_fs,
    write_bytes_atomic,
    write_json,
)
from .index import StreamIndex
from .manifest import SCHEMA_VERSION, ClipShape, PartManifest, StreamInfo
from .names import check_stream_key, name_problem
from .paths import check_clip_id
from .schema import (
    MetadataError,
    check_clip_records,
    check_clip_table,
    expect_dict,
    expect_name,
)
from .stream_array import StreamArray
from .writer import PartWriter, now_iso

StreamRef = str | StreamInfo
T = TypeVar("T")

BACKEND_BY_SUFFIX = {".h5": "hdf5", ".hdf5": "hdf5", ".zarr": "zarr"}


_BUILD_MARKERS = ("random", "reduced")


def _without_build_markers(alias: str) -> str:
    """`name@random@reduced@face` -> `name@face`: the alias an extraction request asks for."""
    return "@".join(p for p in alias.split("@") if p not in _BUILD_MARKERS)


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
    storage_options: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> FeatureStore:
    """Open (mode "r") or open-or-create (mode "a") a store at a path or fsspec URL.

    The backend follows the suffix (`*.h5` -> HDF5, anything else -> Zarr v3) unless named.
    `storage_options` go to fsspec (s3fs: endpoint_url, key, secret, ...). `run_id` names the
    run this handle writes for: leases of that run count as finished when it finalizes
    (default: a fresh id per handle; pickled along to dask workers).
    """
    if mode not in ("r", "a"):
        raise ValueError("mode must be 'r' or 'a'")
    check_store_location(url)
    return FeatureStore(str(url), mode, backend or backend_for(str(url)), dataset, compression,
                        storage_options, run_id)


def check_store_location(url: object) -> None:
    """Refuse a store location that names no store folder of its own.

    `""`, `/` and `//` all strip to nothing (which fsspec reads as the current folder) or to the
    filesystem root: a store there would spread its folders over whatever is in it.
    """
    text = str(url)
    if not text.strip():
        raise UserError(f"{text!r}: not a store location (name a store folder, e.g. "
                        "store/react.zarr)")
    if not text.strip().rstrip("/"):
        raise UserError(f"{text}: is the filesystem root, not a store folder (name one, e.g. "
                        "store/react.zarr)")
    protocol, sep, rest = text.partition("://")
    if sep and not rest.strip("/"):
        raise UserError(f"{text}: names no bucket or folder (e.g. {protocol}://bucket/store.zarr)")
    if not sep or protocol == "file":
        local = os.path.realpath(os.path.expanduser(rest if sep else text))
        if os.path.dirname(local) == local:
            raise UserError(f"{text}: is the filesystem root, not a store folder")


def remote_cache_root() -> str | None:
    """Where parts of remote stores are cached locally (AFFECT_CACHE_DIR; "off" disables)."""
    root = os.environ.get("AFFECT_CACHE_DIR")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "affect", "parts")
    return None if root.strip().lower() in ("", "off", "none", "0") else root


def read_checked(fs, path: str, parse: Callable[[Any], T]) -> T:
    """A store metadata file, read and checked by `parse`: what is wrong in it is one line
    naming the file (the file is input: shared stores are edited and damaged)."""
    data = read_json(fs, path)
    try:
        return parse(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: {exc}") from None


def _access_error(url: str, exc: Exception) -> UserError:
    hint = ("set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), AWS_ENDPOINT_URL for "
            "a non-AWS server, or --storage-option key=... --storage-option secret=...")
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserError(f"{url}: cannot access the store ({type(exc).__name__}: {message}); {hint}")


class FeatureStore:
    def __init__(
        self, url: str, mode: str, backend: str, dataset: str | None, compression: str | None,
        storage_options: dict[str, Any] | None = None, run_id: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.mode = mode
        self.storage_options = storage_options_for(self.url, storage_options)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.fs, self.path = url_to_fs(self.url, self.storage_options)
        self.backend_name = backend
        self.compression = compression
        self.backend = self._make_backend(backend)
        self._indexes: dict[str, StreamIndex] = {}
        self._readers: dict[tuple[str, str], Any] = {}
        self._manifest_cache: dict[tuple[str, str], PartManifest] = {}
        self._streams: dict[str, StreamInfo] | None = None
        self.damaged_streams: dict[str, str] = {}  # key -> why its stream.json is unusable
        meta_path = f"{self.path}/store.json"
        try:
            self._check_reachable()
            if self.fs.isfile(self.path):
                raise UserError(f"{self.url}: is a file, not a feature store (a store is a "
                                "folder; name a new or existing store folder)")
            found = exists(self.fs, meta_path)
        except UserError:
            raise
        except Exception as exc:  # botocore credential/endpoint errors have no common base
            if is_local(self.fs) and not isinstance(exc, PermissionError):
                raise
            raise _access_error(self.url, exc) from None
        if found:
            self.attrs = read_json(self.fs, meta_path)
            if not isinstance(self.attrs, dict):
                raise UserError(f"{meta_path}: not a JSON object (a damaged store.json)")
            stored = self.attrs.get("backend", backend)
            if not isinstance(stored, str) or stored not in known_backends():
                raise UserError(f"{meta_path}: unknown backend {stored!r} (known: "
                                f"{', '.join(known_backends())})")
            if stored != backend:
                self.backend_name = stored
                self.backend = self._make_backend(stored)
        elif mode == "r":
            raise UserError(f"{self.url}: not an affect feature store (no store.json)")
        else:
            attrs = {
                "schema": SCHEMA_VERSION,
                "backend": backend,
                "dataset": dataset,
                "created": now_iso(),
                # Who this store is, wherever it is later found: a run folder records it and
                # refuses another store met at the same path (see `store_id`).
                "id": uuid.uuid4().hex,
            }
            self.backend.init_store(attrs)
            data = json.dumps(attrs, indent=1, sort_keys=True).encode()
            # Exclusive: two processes creating one store at once must agree on one id.
            if create_exclusive(self.fs, meta_path, data):
                self.attrs = attrs
            else:
                self.attrs = read_json(self.fs, meta_path)

    def _make_backend(self, name: str):
        kwargs: dict[str, Any] = {"url": self.url, "compression": self.compression}
        if self.storage_options:
            kwargs["storage_options"] = self.storage_options
        return get_backend(name, **kwargs)

    def _check_reachable(self) -> None:
        """A remote store's bucket must exist: say so in one line instead of creating it."""
        if is_local(self.fs) or not hasattr(self.fs, "split_path"):
            return
        bucket = self.path.split("/", 1)[0]
        protocol = self.url.split("://", 1)[0]
        self.fs.invalidate_cache(bucket)
        try:
            self.fs.info(bucket)
            return
        except FileNotFoundError:
            raise UserError(f"{self.url}: no bucket {bucket!r} at "
                            f"{self._endpoint()} "
                            f"(create it first, e.g. `aws s3 mb {protocol}://{bucket}`)"
                            ) from None

    def _endpoint(self) -> str:
        return (self.storage_options.get("endpoint_url")
                or (self.storage_options.get("client_kwargs") or {}).get("endpoint_url")
                or os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint")

    def __repr__(self) -> str:
        return f"FeatureStore({self.url!r}, backend={self.backend_name!r})"

    @property
    def location(self) -> str:
        """Where the store is, independent of the current folder: an absolute local path or
        the URL of a remote store."""
        return self.path if is_local(self.fs) else self.url

    @property
    def store_id(self) -> str | None:
        """The id written in store.json when the store was created (None for stores made
        before ids were written)."""
        value = self.attrs.get("id")
        return value if isinstance(value, str) and value else None

    @property
    def is_remote(self) -> bool:
        return not is_local(self.fs)

    # Pickling: handles are per process (DataLoader workers, dask tasks) -----------------
    def __getstate__(self) -> dict:
        return {"url": self.url, "mode": self.mode, "backend": self.backend_name,
                "compression": self.compression, "storage_options": self.storage_options,
                "run_id": self.run_id}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], state["mode"], state["backend"], None, state["compression"],
                      state.get("storage_options"), state.get("run_id"))

    def _writable(self) -> None:
        if self.mode == "r":
            raise UserError(f"{self.url}: opened read-only")

    def refresh(self) -> None:
        """Forget cached indexes and handles so parts committed by other processes show up.

        (Manifests are kept: a committed manifest never changes.)
        """
        self._indexes.clear()
        self._readers.clear()
        self._streams = None

    def list_fresh(self, path: str) -> list[str]:
        """Names under `path` in this store's filesystem, never from a cached listing."""
        return list_names(self.fs, path)

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
            data = read_checked(self.fs, f"{base}/table.json", check_clip_table)
            merged = data["batches"]
            table = {r["clip_id"]: r for r in data["clips"]}
        for name in list_names(self.fs, base):
            if name.startswith("batch-") and name not in merged:
                for record in read_checked(self.fs, f"{base}/{name}", check_clip_records):
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
        try:
            expect_name(info.key, "stream key")
        except MetadataError:
            raise UserError(f"stream name {info.name[:80]!r}"
                            f"{'...' if len(info.name) > 80 else ''}: its stream key names the "
                            "stream's folder; use up to 180 letters, digits, '_', '-', '.', "
                            "'@', '+'") from None
        path = f"{self._stream_dir(info.key)}/stream.json"
        if exists(self.fs, path):
            # Another process (or an earlier run) created it: this handle now knows it too,
            # whenever its listing was taken.
            info = self._read_stream_info(info.key)
        else:
            if not info.created:
                # Microseconds: an alias resolves to its newest stream, and a corrected label
                # file re-ingested within the same second must still be the newer one.
                info.created = datetime.now(UTC).isoformat(timespec="microseconds")
            self.backend.create_stream(info.key, info.to_dict())
            write_json(self.fs, path, info.to_dict())
        if self._streams is not None:
            self._streams[info.key] = info
        return info

    def _read_stream_info(self, key: str) -> StreamInfo:
        path = f"{self._stream_dir(key)}/stream.json"
        info = read_checked(self.fs, path, StreamInfo.from_dict)
        check_stream_key(info.key, path)
        if info.key != key:
            # The key names folders (index, leases, intents, parts): one that differs from the
            # folder it was found in would send every write somewhere else, perhaps outside.
            raise UserError(f"{path}: stream key {info.key!r} does not match its folder "
                            f"{key!r}; the store's metadata was edited or damaged")
        return info

    def streams(self, kind: str | None = None) -> list[StreamInfo]:
        """Every readable stream, from this handle's listing of the store.

        The listing is a snapshot, taken on first use and dropped by `refresh`: streams other
        processes create later are missing from it, so it answers "which streams exist" only
        as of when it was taken (`resolve` never trusts it for a miss). A stream whose
        stream.json is damaged is left out and listed in `damaged_streams` (verify reports it;
        the others stay usable).
        """
        if self._streams is None:
            found = {}
            damaged: dict[str, str] = {}
            for key in list_names(self.fs, f"{self.path}/streams"):
                try:
                    if exists(self.fs, f"{self._stream_dir(key)}/stream.json"):
                        found[key] = self._read_stream_info(key)
                except UserError as exc:  # a folder name or stream.json that is not a stream's
                    damaged[key] = str(exc)
            self._streams = found
            self.damaged_streams = damaged
        infos = sorted(self._streams.values(), key=lambda s: (s.alias, s.created, s.key))
        return [s for s in infos if kind is None or s.kind == kind]

    def resolve(self, ref: StreamRef) -> StreamInfo:
        """A stream by key, alias (newest if several) or unique key prefix.

        A stream once created never changes (its key is its content) and is only removed by
        `delete_stream`, so a hit in this handle's listing is final; a miss may only mean the
        stream was created after the listing was taken, so it re-lists once before refusing.
        """
        if isinstance(ref, StreamInfo):
            if ref.key:
                check_stream_key(ref.key, self.url)
                return ref
            ref = ref.alias
        found = self._match(ref, self.streams())
        if found is None:
            self._streams = None
            found = self._match(ref, self.streams())
        if found is not None:
            return found
        known = ", ".join(sorted({s.alias for s in self.streams()})) or "none"
        damaged = ("; damaged, see `affect store verify`: "
                   f"{', '.join(sorted(self.damaged_streams))}" if self.damaged_streams else "")
        raise UserError(f"{self.url}: no stream {ref!r} (streams: {known}{damaged})")

    @staticmethod
    def _match(ref: str, streams: list[StreamInfo]) -> StreamInfo | None:
        for match in (
            [s for s in streams if s.key == ref],
            [s for s in streams if s.alias == ref],
            # A recipe's request (`clip-vit-b16@face`) names the stream an extraction with
            # random or reduced weights made as `clip-vit-b16@random@reduced@face`.
            [s for s in streams if _without_build_markers(s.alias) == ref],
            [s for s in streams if s.name == ref],
            [s for s in streams if s.key.startswith(ref)],
        ):
            if match:
                return max(match, key=lambda s: s.created)
        return None

    def _stream_dir(self, key: str) -> str:
        return f"{self.path}/streams/{check_stream_key(key, self.url)}"

    # Writing ----------------------------------------------------------------------------
    def part_writer(self, stream: StreamRef, part_id: str,
                    numerics: dict[str, Any] | None = None) -> PartWriter:
        """A writer of one part; `numerics` (what computed the rows: library versions, threads)
        goes into its manifest for `verify --numerics`."""
        self._writable()
        return PartWriter(self, self.resolve(stream), part_id, numerics)

    def _write_manifest(self, key: str, manifest: PartManifest, exclusive: bool = False) -> bool:
        """Write a part's commit marker; with `exclusive`, only if none exists (False if one
        did: a manifest is written once and never replaced)."""
        path = f"{self._stream_dir(key)}/manifests/part-{manifest.part_id}.json"
        if exclusive:
            data = json.dumps(manifest.to_dict(), indent=1, sort_keys=True).encode()
            if not create_exclusive(self.fs, path, data):
                return False
        else:
            write_json(self.fs, path, manifest.to_dict())
        self._manifest_cache[(key, manifest.part_id)] = manifest
        self._indexes.pop(key, None)
        self._readers.pop((key, manifest.part_id), None)
        return True

    def forget_part(self, key: str, part_id: str) -> None:
        """Drop what this handle remembers of a part that was deleted."""
        self._manifest_cache.pop((key, part_id), None)
        self._readers.pop((key, part_id), None)
        self._indexes.pop(key, None)

    def committed_parts(self, stream: StreamRef) -> list[str]:
        """Part ids with a manifest, from a fresh listing (never a cached one)."""
        key = self.resolve(stream).key
        names = list_names(self.fs, f"{self._stream_dir(key)}/manifests")
        return [n[len("part-") : -len(".json")] for n in names if n.endswith(".json")]

    def part_committed(self, stream: StreamRef, part_id: str) -> bool:
        """Is the task part `part_id` committed (under its id, or a private `<id>.<token>`
        variant that a writer used while another held the id)? A recomputed task that finds
        its part committed skips it: committed parts are never rewritten."""
        return any(p == part_id or p.startswith(f"{part_id}.")
                   for p in self.committed_parts(stream))

    def manifests(self, stream: StreamRef) -> list[PartManifest]:
        key = self.resolve(stream).key
        out = []
        for part in self.committed_parts(key):
            cached = self._manifest_cache.get((key, part))
            if cached is None:
                try:
                    cached = self._read_manifest(key, part)
                except FileNotFoundError:
                    continue  # deleted with its stream meanwhile
                self._manifest_cache[(key, part)] = cached
            out.append(cached)
        return out

    def _read_manifest(self, key: str, part: str) -> PartManifest:
        path = f"{self._stream_dir(key)}/manifests/part-{part}.json"
        manifest = read_checked(self.fs, path, PartManifest.from_dict)
        if manifest.part_id != part or manifest.stream_key != key:
            raise UserError(f"{path}: names part {manifest.part_id!r} of stream "
                            f"{manifest.stream_key!r}, not its own file's")
        return manifest

    def finalize(self, prune_orphans: bool = False) -> dict[str, dict[str, str]]:
        """Merge manifests into each stream's index and compact the clip table.

        One process only. Committed parts that serve no clip (racing runs committed all their
        clips earlier) are deleted (commit.reclaim_superseded_parts). With `prune_orphans`,
        uncommitted parts whose writer is provably dead are deleted (commit.prune_dead_parts):
        their lease expired or their pid is gone, or they belong to this handle's own run (call
        it after this run's writers are done). Parts of live writers, of this or any other run,
        are never touched. Returns {stream key: {part id: why it was deleted}}.
        """
        self._writable()
        self.refresh()
        pruned: dict[str, dict[str, str]] = {}
        infos = self.streams()
        if self.damaged_streams:  # a whole-store step never passes over a damaged stream
            key, why = sorted(self.damaged_streams.items())[0]
            raise UserError(f"{why}; nothing was finalized (`affect store verify` lists every "
                            "problem)")
        for info in infos:
            if prune_orphans:
                deleted = commit.prune_dead_parts(self, info.key, own_run_id=self.run_id)
                if deleted:
                    pruned[info.key] = deleted
            for part in commit.reclaim_superseded_parts(self, info.key):
                pruned.setdefault(info.key, {})[part] = ("committed, but every clip in it was "
                                                         "committed earlier by another part")
            manifests = self.manifests(info.key)
            index = StreamIndex.from_manifests(manifests, info.dim)
            write_json(self.fs, f"{self._stream_dir(info.key)}/index.json", index.to_dict())
        base = f"{self.path}/clips"
        batches = [n for n in list_names(self.fs, base) if n.startswith("batch-")]
        if batches:
            records = self.clips()
            write_json(self.fs, f"{base}/table.json", {"batches": batches, "clips": records})
        self.refresh()
        return pruned

    # Intents: what a run set out to do, so `verify` can tell complete from incomplete ------
    def record_intent(self, stream: StreamRef, clip_ids: Iterable[str],
                      run_id: str | None = None, in_clip_table: bool = False) -> None:
        """Record that run `run_id` (default: this handle's) means to commit `clip_ids`;
        `in_clip_table`: the run also writes them into the clip table (extraction does), so
        `verify` can tell a deleted clip table from one that never held them."""
        self._writable()
        key = self.resolve(stream).key
        run = run_id or self.run_id
        if name_problem(run):
            raise UserError(f"{self.url}: run id {name_problem(run)}")
        clip_ids = set(clip_ids)
        if clip_ids <= self.committed_clip_ids(key):
            return  # a rerun with nothing left to do adds no record
        write_json(self.fs, f"{self._stream_dir(key)}/intents/{run}.json",
                   {"run_id": run, "created": now_iso(), "clip_ids": sorted(clip_ids),
                    "in_clip_table": in_clip_table})

    def expects_clip_table(self, stream: StreamRef) -> bool:
        """Does the stream's data imply a clip table (a stream claiming every clip, or one an
        extraction wrote, which adds each clip it commits to the table)?"""
        info = self.resolve(stream)
        if (info.claims or {}).get("all"):
            return True
        base = f"{self._stream_dir(info.key)}/intents"
        return any(read_checked(self.fs, f"{base}/{name}", _check_intent).get("in_clip_table")
                   is True for name in list_names(self.fs, base) if name.endswith(".json"))

    def intended_clip_ids(self, stream: StreamRef) -> dict[str, str]:
        """{clip_id: the first run (by name) that intended it} over every recorded intent."""
        key = self.resolve(stream).key
        base = f"{self._stream_dir(key)}/intents"
        out: dict[str, str] = {}
        for name in list_names(self.fs, base):
            if name.endswith(".json"):
                data = read_checked(self.fs, f"{base}/{name}", _check_intent)
                for clip_id in data.get("clip_ids", []):
                    out.setdefault(clip_id, data.get("run_id", name[:-5]))
        return out

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
            try:
                merged = read_checked(self.fs, index_path, StreamIndex.from_dict)
            except UserError:
                merged = None  # a damaged merged index is only a cache: the manifests decide
            # Used only while it covers exactly the committed parts, and names no other part
            # (a part id in it becomes a path to read).
            if (merged is not None and merged.parts == sorted(parts)
                    and set(merged.part_of) <= set(merged.parts)):
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
            cache_root = remote_cache_root() if self.is_remote else None
            if cache_root is not None:
                reader = self._cached_part(key, part_id, cache_root)
            else:
                reader = self.backend.part_reader(key, part_id)
            self._readers[(key, part_id)] = reader
        return reader

    def _cached_part(self, key: str, part_id: str, cache_root: str) -> CachedPart:
        """A remote part read whole once into a local file, then memory-mapped.

        Keyed by the store, the stream and the part's manifest (a committed part never
        changes; a rewritten stream has new manifests), so a cached file is never stale.
        """
        manifest = self._manifest_cache.get((key, part_id))
        if manifest is None:
            manifest = self._read_manifest(key, part_id)
            self._manifest_cache[(key, part_id)] = manifest
        tag = fingerprint([self.url, manifest.to_dict()], 16)
        path = os.path.join(cache_root, key, f"part-{part_id}-{tag}.npy")
        if not os.path.exists(path):
            rows = np.asarray(self.backend.part_reader(key, part_id).read_all())
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            with open(tmp, "wb") as f:
                np.save(f, rows, allow_pickle=False)
            os.replace(tmp, path)
        return CachedPart(np.load(path, mmap_mode="r"), path)

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

    # The same data in other tools (optional libraries: features_store.interop) -----------
    def clips_frame(self, split: str | None = None) -> Any:
        """The clip table as a pandas DataFrame, one row per clip, indexed by clip_id."""
        from .interop import clips_frame

        return clips_frame(self, split)

    def to_xarray(self, stream: StreamRef, clip_ids: Sequence[str] | None = None) -> Any:
        """A stream as an xarray Dataset: every clip's rows end to end along `row`, with
        `clip_id` and `time_s` coordinates (and split, speaker) on that dimension."""
        from .interop import stream_to_xarray

        return stream_to_xarray(self, self.resolve(stream).key, clip_ids)

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
            out.extend(read_checked(self.fs, f"{self.path}/ledger/{name}", _check_ledger_batch))
        if history:
            return out
        def stream_of(record: dict[str, Any]) -> str | None:
            # Extraction names the stream by key in `stream` (older entries: in `stream_key`).
            return record.get("stream_key") or record.get("stream")

        latest: dict[tuple, dict[str, Any]] = {}
        for record in out:
            stream = stream_of(record)
            # Entries without a stream (ingest problems) are told apart by stage and file.
            key = ((record.get("clip_id"), stream) if stream else
                   (record.get("clip_id"), None, record.get("stage"), record.get("file")))
            latest.pop(key, None)
            latest[key] = record
        known = {s.key for s in self.streams()}
        committed: dict[str, set[str]] = {}

        def succeeded(record: dict[str, Any]) -> bool:
            stream = stream_of(record)
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
        key = self.resolve(stream).key
        remove(self.fs, self._stream_dir(key))
        self._manifest_cache = {k: v for k, v in self._manifest_cache.items() if k[0] != key}
        self.refresh()

    def nbytes(self, stream: StreamRef) -> int:
        info = self.resolve(stream)
        return int(self.index(info).n_rows.sum()) * info.dim * np.dtype(info.dtype).itemsize


class CachedPart:
    """A part's rows from the local cache file (same reading interface as a backend reader)."""

    def __init__(self, data: np.ndarray, location: str) -> None:
        self.data, self.location = data, location
        self.shape = tuple(data.shape)
        self.dtype = data.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.data[start:stop]

    def read_all(self) -> np.ndarray:
        return self.data

    def chunk_ranges(self):
        yield 0, self.shape[0], self.location


def _check_intent(data: Any) -> dict[str, Any]:
    data = expect_dict(data, "intent")
    clip_ids = data.get("clip_ids", [])
    if not isinstance(clip_ids, list) or not all(isinstance(c, str) for c in clip_ids):
        raise MetadataError("clip_ids must be a list of clip ids")
    return data


LEDGER_NAME_FIELDS = ("clip_id", "stream", "stream_key", "alias", "stage", "file")


def _check_ledger_batch(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise MetadataError("a ledger file must be a list of JSON objects")
    for i, record in enumerate(data):
        for name in LEDGER_NAME_FIELDS:  # names that entries are matched and grouped by
            if record.get(name) is not None and not isinstance(record[name], str):
                raise MetadataError(f"entry {i}: {name} must be a string")
    return data
