"""`import affect`: the feature store from Python, read-only unless asked.

    import affect
    store = affect.open_store("store/react.zarr")          # mode "r": a typo is an error
    store.clips_frame()                                    # the clip table, a pandas DataFrame
    store.to_xarray("swin-t")                              # a stream as an xarray Dataset
    affect.WindowDataset("store/react.zarr", ["swin-t"], window=64)   # a torch Dataset

The command line is `affect` (pipelines.cli); this package is the library face of the same
store. `features_store.open_store` keeps its own default (mode "a": writers create stores).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from features_store.store import FeatureStore
    from features_store.torch_data import WindowDataset

# Imported on first use: `import affect` must not pay for torch to read a store.
_LAZY = {"WindowDataset": "features_store.torch_data", "FeatureStore": "features_store.store",
         "UserError": "features_store.errors"}

__all__ = ["FeatureStore", "UserError", "WindowDataset", "open_store"]


def open_store(path: str, mode: str = "r", **options: Any) -> FeatureStore:
    """Open the feature store at a path or fsspec URL, read-only by default.

    A path that holds no store is an error (`UserError`), never a new empty store; pass
    mode="a" to open for writing, creating the store if it does not exist. `options` go to
    `features_store.open_store` (backend, storage_options, ...)."""
    from features_store.store import open_store as open_feature_store

    return open_feature_store(str(path), mode=mode, **options)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
