"""The protocol every array backend implements.

A backend stores the 2-D part arrays `[rows, D]` of each stream and nothing else: all metadata
(attributes, manifests, index, clip table) is JSON handled by the store itself, identically for
every backend. A part is written by exactly one writer, streaming rows in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from ..errors import UserError

CHUNK_BYTES = 2 << 20  # chunks of about 2 MB: large enough that per-call overhead stays small
# What zarr codecs (wrong byte count, bad zstd frame) and HDF5 raise for a damaged file.
DAMAGE_ERRORS = (OSError, RuntimeError, ValueError)


def chunk_rows_for(dim: int, dtype: str) -> int:
    itemsize = np.dtype(dtype).itemsize
    return max(16, CHUNK_BYTES // max(1, dim * itemsize))


def damaged(location: str, start: int, stop: int, exc: Exception) -> UserError:
    """A read that failed on a damaged file, as one line that names the file."""
    return UserError(
        f"{location}: cannot read rows {start}:{stop} ({type(exc).__name__}: {exc}); "
        "`affect store verify` lists the damaged chunks"
    )


class PartWriter(Protocol):
    def append(self, rows: np.ndarray) -> None: ...

    def close(self) -> int: ...

    def discard(self) -> None: ...


class PartReader(Protocol):
    shape: tuple[int, int]
    dtype: np.dtype

    def read(self, start: int, stop: int) -> np.ndarray: ...

    def read_all(self) -> np.ndarray: ...

    def chunk_ranges(self) -> Iterator[tuple[int, int, str]]:
        """(start, stop, location) of each stored chunk, for verification."""
        ...


class ArrayBackend(Protocol):
    name: str

    def create_stream(self, stream_key: str, attrs: dict) -> None: ...

    def part_writer(self, stream_key: str, part_id: str, dim: int, dtype: str) -> PartWriter: ...

    def part_reader(self, stream_key: str, part_id: str) -> PartReader: ...

    def list_parts(self, stream_key: str) -> list[str]: ...

    def delete_part(self, stream_key: str, part_id: str) -> None: ...

    def part_location(self, stream_key: str, part_id: str) -> str: ...


_BACKENDS: dict[str, Callable[..., ArrayBackend]] = {}


def register_backend(name: str, factory: Callable[..., ArrayBackend]) -> None:
    _BACKENDS[name] = factory


def known_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str, **kwargs) -> ArrayBackend:
    if name not in _BACKENDS:
        raise KeyError(f"unknown store backend {name!r}; known: {sorted(_BACKENDS)}")
    return _BACKENDS[name](**kwargs)
