"""Clip ids as paths: what a clip id may contain, and joining one onto a folder safely.

Exports write one file per clip under a target folder (`<out>/<clip_id>.npy`, REGNN's
`<out>/<split>/<clip_id>/result-0.pth`), and clip ids come from users' clips files. So a clip
id is held to the rules of a relative POSIX path, checked once where it enters the store, and
every export joins through `safe_join`, which refuses anything that would land outside.

A clip id is one or more segments separated by `/`. Each segment is non-empty, is not `.` or
`..`, and is made of printable characters other than `\\` and `:` (no NUL or other control
characters). The whole id has no leading or trailing whitespace and is at most 1024 characters.
REACT's `NoXI/065_2016-04-14_Nottingham/Expert_video/1` is valid; `../x`, `/etc/x`, `a//b`
and `C:x` are not.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from .errors import UserError

MAX_CLIP_ID_LENGTH = 1024
FORBIDDEN_CHARACTERS = "\\:"


def clip_id_problem(clip_id: object) -> str | None:
    """Why `clip_id` is not a valid clip id, or None when it is."""
    if not isinstance(clip_id, str):
        return f"clip_id must be a string, not {type(clip_id).__name__}"
    if not clip_id.strip():
        return "clip_id is empty"
    if len(clip_id) > MAX_CLIP_ID_LENGTH:
        return f"clip_id is longer than {MAX_CLIP_ID_LENGTH} characters"
    if clip_id != clip_id.strip():
        return f"clip_id {clip_id!r} has leading or trailing whitespace"
    for char in clip_id:
        if unicodedata.category(char).startswith("C"):
            return f"clip_id {clip_id!r} contains the control character {char!r}"
        if char in FORBIDDEN_CHARACTERS:
            return f"clip_id {clip_id!r} contains {char!r} (not allowed in a clip id)"
    if clip_id.startswith("/"):
        return f"clip_id {clip_id!r} is an absolute path (clip ids are relative, like a/b/c)"
    for segment in clip_id.split("/"):
        if segment in ("", ".", ".."):
            return (f"clip_id {clip_id!r} has a {segment or 'empty'!r} path segment "
                    "(clip ids may not climb or skip folders)")
    return None


def check_clip_id(clip_id: object, where: str) -> str:
    """`clip_id` itself, or a one-line UserError naming `where` (file:line, record)."""
    problem = clip_id_problem(clip_id)
    if problem:
        raise UserError(f"{where}: {problem}")
    return clip_id  # type: ignore[return-value]


def safe_join(root: str | os.PathLike[str], *parts: str, suffix: str = "") -> Path:
    """`root/part/part...suffix`, refused unless it resolves inside `root` (symlinks included).

    Each part may hold `/`-separated segments (a clip id); each segment is checked like a clip
    id segment, then the resolved path is compared with the resolved root, so neither `..`
    nor a symlink planted in the target folder can move a file outside it.
    """
    root_path = Path(root)
    segments: list[str] = []
    for part in parts:
        problem = clip_id_problem(part)
        if problem:
            raise UserError(f"{root_path}: refusing to write outside the folder: {problem}")
        segments.extend(part.split("/"))
    if suffix:
        segments[-1] += suffix
    candidate = root_path.joinpath(*segments)
    try:
        resolved_root = root_path.resolve()
        resolved = candidate.resolve()
    except (RuntimeError, OSError) as exc:  # a symlink loop on the way
        raise UserError(f"{candidate}: cannot resolve the path ({exc}); use a real folder") \
            from None
    if resolved != resolved_root and not resolved.is_relative_to(resolved_root):
        raise UserError(f"{candidate}: resolves to {resolved}, outside {resolved_root}; "
                        "refusing to write there")
    return candidate
