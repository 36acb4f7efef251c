"""Heads by name: `register_head` (a class decorator), `get_head(name)`, `list_heads()`.

Head modules register themselves when imported. `_load_builtin_heads` imports the packages that
ship with the project on first lookup, each guarded, so one broken or missing head module shows
up as a clear message when that head is asked for instead of breaking every other head.
"""

from __future__ import annotations

import importlib

from heads.base import Head

_HEADS: dict[str, type[Head]] = {}
# Modules that register heads when imported, and the error each raised (if any).
_BUILTIN_MODULES = (
    "heads.transformer_family",
    "heads.regnn",
    "heads.temporal_attention",
    "heads.tpn_awm",
    "heads.trm",
)
_LOAD_ERRORS: dict[str, str] = {}
_MISSING: set[str] = set()
_loaded = False


def register_head(cls: type[Head]) -> type[Head]:
    """Class decorator: make `cls` available as `get_head(cls.name)`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no `name`")
    existing = _HEADS.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"head name {cls.name!r} registered twice ({existing.__qualname__})")
    _HEADS[cls.name] = cls
    return cls


def _load_builtin_heads() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name == module:
                _MISSING.add(module)  # a head package not in this checkout: not an error
            else:
                _LOAD_ERRORS[module] = f"{type(error).__name__}: {error}"
        except Exception as error:  # reported by get_head; other heads stay usable
            _LOAD_ERRORS[module] = f"{type(error).__name__}: {error}"


def get_head(name: str) -> type[Head]:
    """The head class registered as `name`; UserError listing the known heads otherwise."""
    from features_store.errors import UserError

    _load_builtin_heads()
    if name in _HEADS:
        return _HEADS[name]
    module = f"heads.{name.replace('-', '_')}"
    if module in _MISSING:
        raise UserError(f"head {name!r}: its package {module} is not in this installation")
    message = f"unknown head {name!r}; known heads: {', '.join(list_heads()) or '(none)'}"
    if _LOAD_ERRORS:
        failed = "; ".join(f"{m}: {e}" for m, e in _LOAD_ERRORS.items())
        message += f"; {failed}"
    raise UserError(message)


def list_heads() -> list[str]:
    """Names of all registered heads, sorted."""
    _load_builtin_heads()
    return sorted(_HEADS)
