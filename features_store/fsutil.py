"""Filesystem access for the store's metadata, through fsspec, so a path and a URL behave alike.

Metadata files (stream attributes, manifests, index, clip table, ledger) are small JSON documents.
They are written whole and, on a local disk, through a temporary file and a rename, so a reader
never sees half a file: that is what makes a manifest a safe commit marker.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import UserError


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem and the path inside it for a local path or an fsspec URL."""
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    return fs, path.rstrip("/")


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` so that readers see either the old file, no file, or the whole new file."""
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):  # our own temporary file (a full disk, a kill signal)
                os.remove(tmp)
            raise
    else:
        # Object stores and the memory filesystem publish a single PUT atomically.
        fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)


def write_json(fs: fsspec.AbstractFileSystem, path: str, obj: Any) -> None:
    write_bytes_atomic(fs, path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """Read a JSON file; a damaged file is a UserError that names it."""
    raw = fs.cat_file(path)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def list_names(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Names (not paths) directly under `path`; an absent folder is empty."""
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    names = sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
    return [n for n in names if ".tmp-" not in n]


def exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        return fs.exists(path)
    except FileNotFoundError:
        return False


def remove(fs: fsspec.AbstractFileSystem, path: str) -> None:
    if exists(fs, path):
        fs.rm(path, recursive=True)
