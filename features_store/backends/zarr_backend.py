"""Zarr v3 backend: each part is one zarr array `streams/<key>/parts/part-<id>`.

Rows are buffered (copied: the caller may reuse its buffer) and written whole chunks at a time,
a few chunks per call so zarr writes them concurrently and resizes once per call; a chunk is
never rewritten and memory stays at `FLUSH_CHUNKS` chunks per open writer however long the clip.
Only the part's single owner resizes its array, which keeps zarr's non-atomic metadata updates
safe.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.errors import ContainsGroupError
from zarr.storage import FsspecStore, LocalStore

from ..containment import check_inside
from ..errors import UserError
from ..fsutil import invalidate, is_local, list_names, refuse_special_file, remove, url_to_fs
from .base import DAMAGE_ERRORS, chunk_rows_for, damaged, register_backend

PART_PREFIX = "part-"
FLUSH_CHUNKS = 8  # chunks per write call: ~16 MB buffered per open writer


def _raw_chunks(array) -> bool:
    """Is each chunk file just the rows' little-endian bytes (no compressor, no filter)?

    Then a local part can be written and read as plain files, which is several times faster
    than going through zarr's codec pipeline per chunk, and stays a valid zarr array.
    """
    codecs = array.metadata.codecs
    return (len(codecs) == 1 and type(codecs[0]).__name__ == "BytesCodec"
            and array.metadata.chunk_key_encoding.name == "default"
            and array.metadata.chunk_key_encoding.separator == "/")


def _chunk_path(part_path: str, i: int) -> str:
    return f"{part_path}/c/{i}/0"


def _open_zarr_store(url: str, storage_options: dict | None = None):
    fs, path = url_to_fs(url, storage_options)
    if is_local(fs):
        return LocalStore(path)
    return FsspecStore.from_url(url, storage_options=storage_options or None)


class _ZarrPartWriter:
    def __init__(self, root, path: str, dim: int, dtype: str, compression: str | None,
                 local_path: str | None = None) -> None:
        self.dim, self.dtype = dim, np.dtype(dtype)
        self.chunk_rows = chunk_rows_for(dim, dtype)
        compressors = [ZstdCodec(level=1, checksum=True)] if compression == "zstd" else None
        self.array = zarr.create_array(
            root, name=path, shape=(0, dim), chunks=(self.chunk_rows, dim), dtype=self.dtype,
            compressors=compressors, fill_value=0, overwrite=True,
            # Store all-zero chunks too: skips zarr's per-chunk "is it empty?" scan, and a chunk
            # file that is missing then always means damage, never zeros.
            config={"write_empty_chunks": True},
        )
        self.rows_written = 0
        self.staging = np.empty((FLUSH_CHUNKS * self.chunk_rows, dim), dtype=self.dtype)
        self.staged = 0
        self.local_path = local_path if local_path and _raw_chunks(self.array) else None
        self.le_dtype = self.dtype.newbyteorder("<")

    def _write_raw(self, block: np.ndarray, start: int) -> None:
        """Write whole chunks (the last one padded with zeros) as plain files."""
        first = start // self.chunk_rows
        for k in range(0, len(block), self.chunk_rows):
            chunk = block[k : k + self.chunk_rows].astype(self.le_dtype, copy=False)
            if len(chunk) < self.chunk_rows:
                padded = np.zeros((self.chunk_rows, self.dim), dtype=self.le_dtype)
                padded[: len(chunk)] = chunk
                chunk = padded
            path = _chunk_path(self.local_path, first + k // self.chunk_rows)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(np.ascontiguousarray(chunk).data)

    def append(self, rows: np.ndarray) -> None:
        # Rows are copied once, into the staging buffer (the caller may reuse its array), and
        # written from there in whole chunks: no concatenation, no second copy.
        rows = np.asarray(rows).reshape(-1, self.dim)
        taken = 0
        while taken < len(rows):
            n = min(len(rows) - taken, len(self.staging) - self.staged)
            self.staging[self.staged : self.staged + n] = rows[taken : taken + n]
            self.staged += n
            taken += n
            if self.staged == len(self.staging):
                self._flush()

    def _flush(self) -> None:
        n = self.staged
        if not n:
            return
        block = self.staging[:n]
        start = self.rows_written
        if self.local_path is not None:
            self._write_raw(block, start)  # the shape is set once, at close
        else:
            self.array.resize((start + n, self.dim))
            self.array[start : start + n] = block
        self.rows_written += n
        self.staged = 0

    def close(self) -> int:
        self._flush()
        if self.local_path is not None and self.rows_written:
            self.array.resize((self.rows_written, self.dim))
        return self.rows_written

    def discard(self) -> None:
        self.staged = 0


class _ZarrPartReader:
    def __init__(self, array, location: str, fs) -> None:
        self.array = array
        self.location = location
        self.fs = fs
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.raw = is_local(fs) and _raw_chunks(array)

    def read(self, start: int, stop: int) -> np.ndarray:
        try:
            if self.raw:
                return self._read_raw(start, stop)
            return self.array[start:stop]
        except DAMAGE_ERRORS as exc:
            raise damaged(self.location, start, stop, exc) from exc

    def _read_raw(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.shape[0])
        rows, dim = self.array.chunks[0], self.shape[1]
        out = np.empty((max(0, stop - start), dim), dtype=self.dtype)
        for i in range(start // rows, -(-stop // rows) if stop > start else 0):
            path = _chunk_path(self.location, i)
            chunk = np.fromfile(path, dtype=self.dtype.newbyteorder("<"))
            if chunk.size != rows * dim:
                raise ValueError(f"chunk file {path} holds {chunk.size} values, "
                                 f"expected {rows * dim} (truncated?)")
            chunk = chunk.reshape(rows, dim)
            lo, hi = max(start, i * rows), min(stop, (i + 1) * rows)
            out[lo - start : hi - start] = chunk[lo - i * rows : hi - i * rows]
        return out

    def read_all(self) -> np.ndarray:
        return self.read(0, self.shape[0])

    def chunk_ranges(self) -> Iterator[tuple[int, int, str]]:
        step = self.array.chunks[0]
        for i, start in enumerate(range(0, self.shape[0], step)):
            yield start, min(start + step, self.shape[0]), f"{self.location}/c/{i}/0"

    def missing_chunks(self) -> list[str]:
        """Chunk files that should exist but do not (zarr would read them as zeros)."""
        invalidate(self.fs, f"{self.location}/c")
        try:
            present = {p.rstrip("/") for p in self.fs.find(f"{self.location}/c")}
        except FileNotFoundError:
            present = set()
        return [loc for _, _, loc in self.chunk_ranges() if loc not in present]


class ZarrBackend:
    name = "zarr"

    def __init__(self, url: str, compression: str | None = None,
                 storage_options: dict | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}
        self.fs, self.path = url_to_fs(self.url, self.storage_options)
        self.compression = compression
        self._root = None

    @property
    def root(self):
        if self._root is None:
            self._root = _open_zarr_store(self.url, self.storage_options)
        return self._root

    def __getstate__(self) -> dict:
        # zarr stores hold event loops and file handles: reopen them in each process.
        return {"url": self.url, "compression": self.compression,
                "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], state["compression"], state.get("storage_options"))

    def init_store(self, attrs: dict) -> None:
        try:
            zarr.open_group(self.root, mode="a", attributes=attrs)
        except ContainsGroupError:
            pass  # another process created the store at the same moment: store.json decides

    def create_stream(self, stream_key: str, attrs: dict) -> None:
        group = zarr.open_group(self.root, mode="a")
        stream = group.require_group(f"streams/{stream_key}")
        stream.attrs.update(attrs)
        stream.require_group("parts")

    def _array_path(self, stream_key: str, part_id: str) -> str:
        return f"streams/{stream_key}/parts/{PART_PREFIX}{part_id}"

    def part_location(self, stream_key: str, part_id: str) -> str:
        return f"{self.path}/{self._array_path(stream_key, part_id)}"

    def part_writer(self, stream_key: str, part_id: str, dim: int, dtype: str) -> _ZarrPartWriter:
        local = self.part_location(stream_key, part_id) if is_local(self.fs) else None
        return _ZarrPartWriter(
            self.root, self._array_path(stream_key, part_id), dim, dtype, self.compression, local
        )

    def part_reader(self, stream_key: str, part_id: str) -> _ZarrPartReader:
        path = self._array_path(stream_key, part_id)
        location = self.part_location(stream_key, part_id)
        if is_local(self.fs):
            check_inside(self.path, location)
        refuse_special_file(self.fs, f"{location}/zarr.json")
        try:
            array = zarr.open_array(self.root, path=path, mode="r")
        except Exception as exc:  # noqa: BLE001 - missing or damaged zarr.json, any codec
            cause = str(exc).splitlines()[0] if str(exc) else ""
            raise UserError(f"{location}: cannot open array ({type(exc).__name__}: {cause}); "
                            "`affect store verify` lists the damage") from None
        return _ZarrPartReader(array, location, self.fs)

    def list_parts(self, stream_key: str) -> list[str]:
        names = list_names(self.fs, f"{self.path}/streams/{stream_key}/parts")
        return [n[len(PART_PREFIX) :] for n in names if n.startswith(PART_PREFIX)]

    def delete_part(self, stream_key: str, part_id: str) -> None:
        remove(self.fs, self.part_location(stream_key, part_id))


register_backend("zarr", ZarrBackend)
