"""A local store's files must stay inside the store: no symbolic link may lead out of it.

A store is input too: one shared by someone else could hold a chunk file that is a link to
`/etc/passwd` or to another user's data, and export would copy those bytes out as features.
Readers of local parts call `check_inside` before reading; links that stay inside the store
(a tool that deduplicates chunks) are fine.
"""

from __future__ import annotations

import os

from .errors import UserError


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_inside(store_root: str, path: str) -> None:
    """Raise a one-line UserError if `path`, or any file or folder under it, resolves outside
    `store_root` (symbolic links followed)."""
    root = os.path.realpath(store_root)
    resolved = os.path.realpath(path)
    if not _is_within(resolved, root):
        raise UserError(f"{path}: resolves to {resolved}, outside the store {root}; refusing "
                        "to read it (a link out of the store)")
    if not os.path.isdir(path):
        return
    for folder, dirs, files in os.walk(path):  # links are not followed, only checked
        for name in dirs + files:
            entry = os.path.join(folder, name)
            if os.path.islink(entry):
                target = os.path.realpath(entry)
                if not _is_within(target, root):
                    raise UserError(f"{entry}: a link to {target}, outside the store {root}; "
                                    "refusing to read it")
