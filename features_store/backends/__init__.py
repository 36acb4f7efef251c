"""Array backends behind one small protocol, registered by name (Zarr v3 is the default)."""

from __future__ import annotations

from .base import ArrayBackend, PartReader, PartWriter, get_backend, register_backend
from .hdf5_backend import Hdf5Backend
from .zarr_backend import ZarrBackend

__all__ = [
    "ArrayBackend",
    "Hdf5Backend",
    "PartReader",
    "PartWriter",
    "ZarrBackend",
    "get_backend",
    "register_backend",
]
