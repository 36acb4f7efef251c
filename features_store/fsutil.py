"""Filesystem access for the store's metadata, through fsspec, so a path and a URL behave alike.

Metadata files (stream attributes, manifests, index, clip table, ledger) are small JSON documents.
They are written whole and, on a local disk, through a temporary file and a rename, so a reader
never sees half a file: that is what makes a manifest a safe commit marker.

Every listing and existence check here bypasses fsspec's directory cache (s3fs keeps one per
filesystem instance): a stale listing is how one process deletes another's just-committed part.

Object stores take their settings from the usual places (AWS_* variables, AWS_ENDPOINT_URL,
fsspec's config files) and from `storage_options` (the CLI's `--storage-option key=value`).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import uuid
from collections.abc import Iterable
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import UserError

# Options set once per process by the CLI (`--storage-option`), merged under explicit ones.
# Also exported in the environment, so worker processes the command starts (a LocalCluster's)
# open the store the same way; workers started elsewhere need their own settings.
STORAGE_OPTIONS_ENV = "AFFECT_STORAGE_OPTIONS"


def set_default_storage_options(options: dict[str, Any]) -> None:
    """Storage options every store opened later by this process and its children uses
    (explicit ones win)."""
    os.environ[STORAGE_OPTIONS_ENV] = json.dumps(options)


def _default_storage_options() -> dict[str, Any]:
    raw = os.environ.get(STORAGE_OPTIONS_ENV)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise UserError(f"{STORAGE_OPTIONS_ENV}: not a JSON object of fsspec options") from None
    if not isinstance(value, dict):
        raise UserError(f"{STORAGE_OPTIONS_ENV}: not a JSON object of fsspec options")
    return value


def storage_options_for(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    if "://" not in str(url) or str(url).startswith("file://"):
        return {}
    return {**_default_storage_options(), **(options or {})}


def parse_storage_options(pairs: Iterable[str]) -> dict[str, Any]:
    """`["key=value", "client_kwargs.region_name=eu"]` -> options; values parsed as JSON if
    they are JSON (numbers, true/false), dotted keys as nested dictionaries."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--storage-option {pair!r}: expected KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        target = out
        *parents, leaf = key.strip().split(".")
        for name in parents:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise UserError(f"--storage-option {pair!r}: {name} is already a value")
        target[leaf] = value
    return out


def url_to_fs(url: str, storage_options: dict[str, Any] | None = None
              ) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the filesystem and the path inside it for a local path or an fsspec URL."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options_for(url, storage_options))
    except ImportError as exc:
        raise UserError(f"{url}: {exc} (for s3:// install the s3 extra: pip install "
                        "'affect[s3]')") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"{url}: bad storage options ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - filesystems that connect at once (ftp, github)
        lines = [line for line in str(exc).splitlines() if line.strip()]
        reason = lines[0][:200] if lines else type(exc).__name__
        raise UserError(f"{url}: cannot open this location ({type(exc).__name__}: {reason}); "
                        "a store is a local folder or an object store URL (s3://, gs://, ...)"
                        ) from None
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    return fs, path.rstrip("/")


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _write_synced(path: str, data: bytes) -> None:
    """A whole local file on disk (fsync) before it is renamed or linked into view."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` so that readers see either the old file, no file, or the whole new file."""
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            _write_synced(tmp, data)
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
    """Read a JSON file; a damaged file is a UserError that names it.

    On a local disk only a plain file is read: the store never writes links or special files,
    and one planted there (a FIFO, a link to /dev/zero or to a file outside the store) would
    block the reader, never end, or read outside the store.
    """
    if is_local(fs):
        raw = _read_plain_file(path)
    else:
        raw = fs.cat_file(path)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None


def refuse_special_file(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """A UserError if `path` on a local disk is a link or not a regular file (a FIFO planted
    for a part's zarr.json or HDF5 file would block whoever opens it); a missing file passes
    (the caller reports it its own way)."""
    if not is_local(fs):
        return
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise UserError(f"{path}: is a link; a store's files are plain files (a store from "
                        "elsewhere may not point outside itself)")
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: not a regular file (a FIFO, device or socket)")


def _read_plain_file(path: str) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        handle = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            raise UserError(f"{path}: is a link; store metadata files are plain files "
                            "(a store from elsewhere may not point outside itself)") from None
        raise
    with os.fdopen(handle, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UserError(f"{path}: not a regular file (a FIFO, device or socket)")
        return f.read()


def create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create `path` holding `data` only if it does not exist; False if it already did.

    Atomic where the filesystem allows it: a hard link of a complete temporary file on a local
    disk, a conditional PUT (If-None-Match) on S3; elsewhere fsspec's check-then-write.
    """
    parent = path.rsplit("/", 1)[0]
    if is_local(fs):
        os.makedirs(parent, exist_ok=True)
        # The temporary file sits one folder up (same filesystem, so it can be linked), out of
        # the folder whose listing decides what is committed.
        folder, name = os.path.split(path)
        tmp = os.path.join(os.path.dirname(folder), f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            _write_synced(tmp, data)
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            if os.path.exists(tmp):  # ours alone, linked or not (also on a full disk, a kill)
                os.unlink(tmp)
        return True
    invalidate(fs, path)
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except TypeError:  # a filesystem without exclusive writes: check, then write (not atomic)
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
    except OSError as exc:  # s3fs reports a failed precondition as an OSError subclass
        if "precondition" in str(exc).lower() or getattr(exc, "errno", None) == 17:
            return False
        raise
    return True


def invalidate(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Drop fsspec's cached listing of `path` (and its parents), where it keeps one."""
    if not is_local(fs):
        fs.invalidate_cache(path)


def list_names(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Names (not paths) directly under `path`, listed fresh; an absent folder is empty."""
    invalidate(fs, path)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    names = sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
    return [n for n in names if ".tmp-" not in n]


def exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Does `path` exist now (not per a cached listing)?"""
    invalidate(fs, path)
    try:
        return fs.exists(path)
    except FileNotFoundError:
        return False


def remove(fs: fsspec.AbstractFileSystem, path: str) -> None:
    if exists(fs, path):
        fs.rm(path, recursive=True)
