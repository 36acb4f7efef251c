"""Profiles: one switch between a paper's released behaviour and our corrections.

Every head config's field defaults are the `paper` profile: what the paper's released code does,
its bugs included, so `affect train --head H` gives the number the paper's code would give on
the same features. The `fixed` profile turns on every documented correction of that head at once
(the config class lists them in `FIXED`: field -> corrected value). `--set` flags given with a
profile still override single fields of it.

A run records its profile and every setting that departs from the paper (`deviations`: each
field whose value differs from the paper default, as "field=value"), so a table of runs says
which ones are comparable with a paper's number. What the paper did that cannot be reproduced
from cached features is listed by the head as `approximate` (see `Head.approximations`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

PROFILES = ("paper", "fixed")

# Fields that say how a run is organised, not what it computes: never a departure from a paper.
NEUTRAL_FIELDS = frozenset({"profile"})


def profile_values(config_cls: type, profile: str) -> dict[str, Any]:
    """The field values `profile` sets on `config_cls` (paper: the defaults of `FIXED`'s fields)."""
    from features_store.errors import UserError

    if profile not in PROFILES:
        raise UserError(f"profile={profile!r}: use one of {', '.join(PROFILES)}")
    fixed: Mapping[str, Any] = getattr(config_cls, "FIXED", {})
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(fixed) - names)
    if unknown:  # a programming error in a head's config, caught by the tests of every head
        raise ValueError(f"{config_cls.__name__}.FIXED names unknown fields: {unknown}")
    if profile == "fixed":
        return {"profile": "fixed", **fixed}
    paper = config_cls()
    return {"profile": "paper", **{name: getattr(paper, name) for name in fixed}}


def format_value(value: Any) -> str:
    """A config value as the user would type it after `--set field=`."""
    if isinstance(value, tuple | list):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def deviations(config: Any, paper: Any = None) -> list[str]:
    """Every setting of `config` that differs from the paper profile's (`paper`: that config
    settled from the same store, see `Head.paper_config`), as "field=value"."""
    paper = paper if paper is not None else type(config)()
    out = []
    for f in dataclasses.fields(config):
        if f.name in NEUTRAL_FIELDS:
            continue
        value, reference = getattr(config, f.name), getattr(paper, f.name)
        if _differs(value, reference):
            out.append(f"{f.name}={format_value(value)}")
    return out


def _differs(value: Any, reference: Any) -> bool:
    if isinstance(value, list | tuple) and isinstance(reference, list | tuple):
        return len(value) != len(reference) or any(_differs(a, b)
                                                   for a, b in zip(value, reference))
    if isinstance(value, float) and isinstance(reference, float):
        return value != reference and not (value != value and reference != reference)
    return value != reference


def corrections(config_cls: type) -> list[str]:
    """What the fixed profile changes, as "field=value" (for `runs ls` of a fixed run and docs)."""
    fixed: Mapping[str, Any] = getattr(config_cls, "FIXED", {})
    return [f"{name}={format_value(value)}" for name, value in fixed.items()]


def profile_record(config: Any, approximate: list[str] | None = None,
                   paper: Any = None) -> dict[str, Any]:
    """What a run's config.json, `evaluate --json` and the report say about fidelity."""
    return {"profile": getattr(config, "profile", "paper"),
            "deviations": deviations(config, paper), "approximate": list(approximate or [])}
