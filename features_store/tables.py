"""Text tables and counts as every command prints them (one formatter, so they all agree).

Text cells are printed escaped (features_store.printable: a store's aliases and clip ids are
other people's text). Columns are as wide as their widest cell (a long alias widens its column
instead of pushing the rest out of line); numbers are right-aligned, text left-aligned; integers
print as integers and other numbers with a fixed precision; counts read "1 clip", "2 clips".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from .printable import printable


def plural(count: int, word: str, plural_word: str | None = None) -> str:
    """`1 clip`, `0 clips`, `3 files`."""
    return f"{count} {word if count == 1 else (plural_word or word + 's')}"


def format_value(value: Any, decimals: int = 4) -> str:
    """Integers (and integer-valued counts stored as numpy ints) as integers, other reals with
    `decimals` places, None as `-`, anything else as str."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return str(value) if not math.isfinite(value) else f"{value:.{decimals}f}"
    return printable(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                 headers: Mapping[str, str] | None = None, decimals: int = 4) -> str:
    """One header line and one line per row; no trailing spaces."""
    headers = headers or {}
    titles = [printable(headers.get(c, c)) for c in columns]
    cells = [[format_value(row.get(c), decimals) for c in columns] for row in rows]
    numeric = [bool(rows) and all(_is_number(row.get(c)) or row.get(c) is None for row in rows)
               for c in columns]
    widths = [max([len(t), *(len(line[i]) for line in cells)]) for i, t in enumerate(titles)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if right else v.ljust(w)
                 for v, w, right in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(titles), *(line(c) for c in cells)])
