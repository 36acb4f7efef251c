"""Dataset adapters by name: each reads one dataset layout as distributed.

    adapter = get_adapter("react")
    result = adapter.scan("/data/react")      # clips, labels, aux arrays, problems; no writes
    pipelines.ingest.ingest(adapter, "/data/react", store)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .affwild2 import AffWild2Adapter
from .base import Adapter, AuxArray, LabelRows, LabelStream, Recipe, ScanResult
from .cremad import CremaDAdapter
from .iemocap import IemocapAdapter
from .meld import MeldAdapter
from .mosei import MoseiAdapter
from .raer import RaerAdapter
from .react import ReactAdapter

_ADAPTERS: dict[str, Callable[..., Adapter]] = {}


def register_adapter(name: str, factory: Callable[..., Adapter]) -> None:
    """Make `get_adapter(name)` build `factory(**options)`; a new layout registers itself here."""
    _ADAPTERS[name] = factory


for _cls in (ReactAdapter, RaerAdapter, AffWild2Adapter, CremaDAdapter, MeldAdapter,
             IemocapAdapter, MoseiAdapter):
    register_adapter(_cls.name, _cls)


def list_adapters() -> list[str]:
    return list(_ADAPTERS)


def get_adapter(name: str, **options: Any) -> Adapter:
    """The adapter for a layout name; unknown names are a UserError listing the known ones."""
    factory = _ADAPTERS.get(name)
    if factory is None:
        from features_store.errors import UserError

        raise UserError(f"unknown dataset layout {name!r} (known: {', '.join(_ADAPTERS)})")
    return factory(**options)


__all__ = [
    "Adapter",
    "AuxArray",
    "LabelRows",
    "LabelStream",
    "Recipe",
    "ScanResult",
    "get_adapter",
    "list_adapters",
    "register_adapter",
]
