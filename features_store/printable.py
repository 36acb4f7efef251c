"""Text from a store or a clips file, made safe to print on a terminal.

Clip ids, aliases and error messages come from files other people wrote. Raw control
characters in them (ESC sequences that move the cursor, clear the screen, set the window title
or fake a hyperlink; bidi overrides that reorder what is shown) would act on the terminal
instead of being shown, so every such character is printed as its Python escape (`\\x1b`).
"""

from __future__ import annotations

import unicodedata


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """`str(text)` with control and format characters (Unicode categories Cc, Cf, Cs, Co, Cn)
    written as escapes; everything else, non-ASCII letters included, as it is."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(_escaped(c) if unicodedata.category(c).startswith("C") else c for c in value)
