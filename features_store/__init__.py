"""features_store: the chunked, ragged feature store that extraction writes and heads read.

Imports neither `extract` nor `heads`: a store can be read on a machine with no video and no
encoder weights.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import UserError

# Names imported on first use: `features_store.errors` (which every CLI command needs for its
# one-line errors) must not pull in zarr, h5py and numpy, or `affect --help` pays for them.
_LAZY = {
    "ClipEntry": "manifest", "ClipShape": "manifest", "PartManifest": "manifest",
    "StreamInfo": "manifest", "FeatureStore": "store", "open_store": "store",
    "StreamArray": "stream_array", "VerifyReport": "verify", "verify": "verify",
    "LeaseLost": "commit", "PartCommitted": "commit",
}

if TYPE_CHECKING:
    from .commit import LeaseLost, PartCommitted
    from .manifest import ClipEntry, ClipShape, PartManifest, StreamInfo
    from .store import FeatureStore, open_store
    from .stream_array import StreamArray
    from .verify import VerifyReport, verify


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "ClipEntry",
    "ClipShape",
    "FeatureStore",
    "LeaseLost",
    "PartCommitted",
    "PartManifest",
    "StreamArray",
    "StreamInfo",
    "UserError",
    "VerifyReport",
    "open_store",
    "verify",
]
