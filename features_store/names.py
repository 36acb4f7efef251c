"""Names read from a store's metadata that become paths: stream keys and part ids.

A store is input too (users share stores), so a name found in `stream.json`, a manifest, a
lease or `index.json` is checked before any path is built from it: one path component, made of
letters, digits and `_ . @ + -`, starting with a letter or digit (so never `.` or `..`). A
stream key must also equal the folder its `stream.json` was found in (store.py), and a part id
in a manifest the name of the manifest's file.
"""

from __future__ import annotations

import re

from .errors import UserError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,199}$")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be one path component of the store, or None when it can."""
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if not NAME_PATTERN.match(name):
        return (f"{name[:80]!r} is not a plain name (letters, digits and _ . @ + - only, "
                "starting with a letter or digit, at most 200 characters)")
    return None


def check_stream_key(key: object, where: str) -> str:
    problem = name_problem(key)
    if problem:
        raise UserError(f"{where}: stream key {problem}; the store's metadata was edited or "
                        "damaged")
    return key  # type: ignore[return-value]


def check_part_id(part_id: object, where: str) -> str:
    problem = name_problem(part_id)
    if problem:
        raise UserError(f"{where}: part id {problem}; the store's metadata was edited or "
                        "damaged")
    return part_id  # type: ignore[return-value]
