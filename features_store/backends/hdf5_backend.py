"""HDF5 backend: one `.h5` file per part, since h5py allows a single writer per file.

The store is a folder (named `*.h5`) holding the same JSON metadata as the Zarr backend and one
HDF5 file per part with a chunked, resizable dataset `rows`. Remote stores (fsspec URLs) write
the part to a local temporary file first and upload it whole on close, and read a part by
fetching it whole into a local temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import h5py
import numpy as np

from ..containment import check_inside
from ..errors import UserError
from ..fsutil import is_local, list_names, refuse_special_file, remove, url_to_fs
from .base import DAMAGE_ERRORS, chunk_rows_for, damaged, register_backend

PART_PREFIX = "part-"
PART_SUFFIX = ".h5"
DATASET = "rows"


class _Hdf5PartWriter:
    def __init__(self, fs, path: str, dim: int, dtype: str) -> None:
        self.fs, self.path = fs, path
        self.dim, self.dtype = dim, np.dtype(dtype)
        if is_local(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.local_path = path
        else:
            handle, self.local_path = tempfile.mkstemp(suffix=PART_SUFFIX)
            os.close(handle)
        self.file = h5py.File(self.local_path, "w")
        self.dataset = self.file.create_dataset(
            DATASET, shape=(0, dim), maxshape=(None, dim), dtype=self.dtype,
            chunks=(chunk_rows_for(dim, dtype), dim),
        )
        self.rows_written = 0

    def append(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=self.dtype).reshape(-1, self.dim)
        if not len(rows):
            return
        start = self.rows_written
        self.dataset.resize((start + len(rows), self.dim))
        self.dataset[start:] = rows
        self.rows_written += len(rows)

    def close(self) -> int:
        self.file.close()
        if self.local_path != self.path:
            self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(self.local_path, self.path)
            os.unlink(self.local_path)
        return self.rows_written

    def discard(self) -> None:
        if self.file.id.valid:
            self.file.close()
        if self.local_path != self.path and os.path.exists(self.local_path):
            os.unlink(self.local_path)


def _own_rows(file: h5py.File, path: str) -> h5py.Dataset:
    """The part's `rows` dataset, refused unless its bytes live in this very file.

    HDF5 can point a dataset elsewhere: external raw storage (any file's bytes read as rows),
    an external or soft link, a virtual dataset mapping other files. A part this backend wrote
    holds one plain dataset and nothing else, so anything more is refused.
    """
    names = list(file.keys())
    if names != [DATASET]:
        raise UserError(f"{path}: holds {names[:5]!r}, not only the {DATASET!r} dataset a part "
                        "has; refusing to read it")
    link = file.get(DATASET, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise UserError(f"{path}: {DATASET!r} is a {type(link).__name__} to another place; "
                        "refusing to read it")
    dataset = file[DATASET]
    if not isinstance(dataset, h5py.Dataset):
        raise UserError(f"{path}: {DATASET!r} is not a dataset")
    if dataset.is_virtual:
        raise UserError(f"{path}: {DATASET!r} is a virtual dataset (its rows live in other "
                        "files); refusing to read it")
    if dataset.external:
        raise UserError(f"{path}: {DATASET!r} keeps its rows in external file(s) "
                        f"{dataset.external[0][0]!r}; refusing to read it")
    return dataset


class _Hdf5PartReader:
    def __init__(self, fs, path: str) -> None:
        self.location = path
        local = path
        if not is_local(fs):
            # A remote part is fetched whole (parts are read whole: training caches them) and
            # opened as a local file. h5py reading through a Python file object holds its global
            # lock while fsspec's event-loop thread serves the read; a garbage collection there
            # that frees any h5py object then waits for that lock: a deadlock seen on S3.
            handle, local = tempfile.mkstemp(suffix=PART_SUFFIX)
            os.close(handle)
            try:
                fs.get_file(path, local)
            except BaseException:
                os.unlink(local)
                raise
        try:
            self.file = h5py.File(local, "r")
            self.dataset = _own_rows(self.file, path)
        except (OSError, KeyError) as exc:
            raise UserError(f"{path}: cannot open array ({type(exc).__name__}: {exc})") from None
        except UserError:
            self.file.close()
            raise
        finally:
            if local != path:
                os.unlink(local)  # the open file stays readable; nothing is left behind
        self.shape = tuple(self.dataset.shape)
        self.dtype = self.dataset.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        try:
            return self.dataset[start:stop]
        except DAMAGE_ERRORS as exc:
            raise damaged(self.location, start, stop, exc) from exc

    def read_all(self) -> np.ndarray:
        return self.read(0, self.shape[0])

    def chunk_ranges(self) -> Iterator[tuple[int, int, str]]:
        step = (self.dataset.chunks or self.shape)[0] or 1
        for start in range(0, self.shape[0], step):
            stop = min(start + step, self.shape[0])
            yield start, stop, f"{self.location}:/{DATASET}[{start}:{stop}]"


class Hdf5Backend:
    name = "hdf5"

    def __init__(self, url: str, compression: str | None = None,
                 storage_options: dict | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}
        self.fs, self.path = url_to_fs(self.url, self.storage_options)

    def __getstate__(self) -> dict:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], storage_options=state.get("storage_options"))

    def init_store(self, attrs: dict) -> None:
        self.fs.makedirs(self.path, exist_ok=True)

    def create_stream(self, stream_key: str, attrs: dict) -> None:
        self.fs.makedirs(f"{self.path}/streams/{stream_key}/parts", exist_ok=True)

    def part_location(self, stream_key: str, part_id: str) -> str:
        return f"{self.path}/streams/{stream_key}/parts/{PART_PREFIX}{part_id}{PART_SUFFIX}"

    def part_writer(self, stream_key: str, part_id: str, dim: int, dtype: str) -> _Hdf5PartWriter:
        return _Hdf5PartWriter(self.fs, self.part_location(stream_key, part_id), dim, dtype)

    def part_reader(self, stream_key: str, part_id: str) -> _Hdf5PartReader:
        location = self.part_location(stream_key, part_id)
        refuse_special_file(self.fs, location)
        if is_local(self.fs):
            check_inside(self.path, location)
        return _Hdf5PartReader(self.fs, location)

    def list_parts(self, stream_key: str) -> list[str]:
        names = list_names(self.fs, f"{self.path}/streams/{stream_key}/parts")
        return [
            n[len(PART_PREFIX) : -len(PART_SUFFIX)]
            for n in names
            if n.startswith(PART_PREFIX) and n.endswith(PART_SUFFIX)
        ]

    def delete_part(self, stream_key: str, part_id: str) -> None:
        remove(self.fs, self.part_location(stream_key, part_id))


register_backend("hdf5", Hdf5Backend)
