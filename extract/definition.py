"""What a clip is made of, so that "already in the store" means the same clip, not the same name.

A clip id alone does not say what was extracted: a rerun may point the id at another video, or
at another time range of the same one. Each clip-table record keeps the clip's definition per
modality (video: source, start, end, fps, boxes; audio: source, start, end; text: the text and
its times). A source is identified by its path, size and mtime, backed by a sha256 of all its
bytes: an untouched file is recognised by one `stat`, and a copied or moved one (new mtime or
path, same bytes) by its digest. The digest reads the whole file, streaming, since an edit that
keeps the size (a re-encoded segment in the middle of a video) changes features as surely as
any other (BENCHMARKS.md: its cost beside decoding the same file).

Only regular files are read: a FIFO, a device or a socket named as a source would block the
digest (and the decoder) forever, so it counts as a missing source, which the run ledgers.

A clip whose definition changed while some stream already holds its rows is refused with one
line (old rows are never kept under a new definition, and never mixed with new ones); a changed
clip that no stream holds yet simply gets its new record.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from typing import Any

from features_store import FeatureStore
from features_store.errors import UserError
from features_store.fingerprint import fingerprint

DIGEST_BLOCK_BYTES = 1 << 20
DEFINITION_FIELD = "definition"
MODALITIES = ("video", "audio", "text")


def _source_of(clip: dict, modality: str) -> str | None:
    if modality == "video":
        return clip.get("video") or clip.get("frames")
    if modality == "audio":
        return clip.get("audio") or clip.get("video")
    return None


def is_regular_file(path: str) -> bool:
    """A plain file (after symlinks): the only kind of source that is ever opened."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _files_of(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(os.path.join(path, n) for n in os.listdir(path)
                      if is_regular_file(os.path.join(path, n)))
    if not is_regular_file(path):
        # Missing, or a FIFO / device / socket that would block whoever opens it.
        raise FileNotFoundError(path)
    return [path]


def source_stat(path: str) -> dict[str, Any]:
    """Path, size and mtime of a file, or of a frame folder (its file count and totals)."""
    if not isinstance(path, str | os.PathLike):  # a malformed record: the run ledgers it
        return {"path": repr(path), "missing": True}
    absolute = os.path.abspath(path)
    try:
        files = _files_of(absolute)
        stats = [os.stat(f) for f in files]
    except OSError:
        return {"path": absolute, "missing": True}
    return {"path": absolute, "files": len(files), "size": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


def source_digest(path: str) -> str | None:
    """sha256 over every byte of the source (each frame of a folder, with its name and size),
    read in blocks so memory stays flat whatever the file's size."""
    if not isinstance(path, str | os.PathLike):
        return None
    digest = hashlib.sha256()
    try:
        absolute = os.path.abspath(path)
        files = _files_of(absolute)
        folder = os.path.isdir(absolute)
        for f in files:
            # A frame's name is its position; a single file's name is not content.
            name = os.path.basename(f) if folder else ""
            digest.update(f"{name}:{os.path.getsize(f)};".encode())
            # O_NONBLOCK: a file swapped for a FIFO after the check above still cannot block.
            handle = os.open(f, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(handle, "rb") as reader:
                if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
                    return None
                while block := reader.read(DIGEST_BLOCK_BYTES):
                    digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()[:32]


def _settings(clip: dict, modality: str) -> dict[str, Any]:
    """Everything but the source's bytes that decides this modality's rows."""
    settings: dict[str, Any] = {"start": clip.get("start"), "end": clip.get("end")}
    if modality == "video":
        settings["fps"] = clip.get("fps")
        settings["boxes"] = fingerprint(clip["boxes"], 16) if clip.get("boxes") else None
    if modality == "text":
        settings["text"] = fingerprint(clip.get("text"), 16)
    return settings


def clip_definition(clip: dict) -> dict[str, Any]:
    """The definition of each modality the clip has input for."""
    out: dict[str, Any] = {}
    for modality in MODALITIES:
        source = _source_of(clip, modality)
        if modality == "text" and not clip.get("text"):
            continue
        if modality != "text" and not source:
            continue
        entry = _settings(clip, modality)
        if source:
            entry["source"] = {**source_stat(source), "digest": source_digest(source)}
        out[modality] = entry
    return out


def _difference(stored: dict[str, Any], clip: dict, modality: str) -> str | None:
    """What changed in `modality` since `stored` was recorded, or None (same definition)."""
    now = _settings(clip, modality)
    for name, value in now.items():
        if stored.get(name) != value:
            return f"{name} was {stored.get(name)!r}, now {value!r}"
    source = _source_of(clip, modality)
    old = stored.get("source")
    if (source is None) != (old is None):
        return f"source was {old and old.get('path')!r}, now {source!r}"
    if source is None:
        return None
    stat = source_stat(source)
    if all(old.get(k) == stat.get(k) for k in ("path", "files", "size", "mtime_ns")):
        return None  # untouched: one stat, no read
    if stat.get("missing"):
        return None  # the source is gone: nothing to compare, the run reports it missing
    if source_digest(source) == old.get("digest"):
        return None  # the same bytes, copied or moved
    return f"source {stat['path']} is not the file that was extracted ({old.get('path')})"


def _streams_holding(store: FeatureStore, clip_id: str, modality: str,
                     committed: dict[str, set[str]]) -> list[str]:
    held = []
    for info in store.streams(kind="feature"):
        if info.extra.get("modality") != modality:
            continue
        if info.key not in committed:
            committed[info.key] = store.committed_clip_ids(info)
        if clip_id in committed[info.key]:
            held.append(info.alias)
    return held


def changed_clips(store: FeatureStore, clips: Iterable[dict]) -> list[tuple[dict, str]]:
    """(clip, what changed) for each clip whose recorded definition differs from `clip`'s and
    whose rows some stream already holds."""
    records = {r["clip_id"]: r for r in store.clips()}
    committed: dict[str, set[str]] = {}
    stale = []
    for clip in clips:
        stored = (records.get(clip["clip_id"]) or {}).get(DEFINITION_FIELD) or {}
        for modality, entry in stored.items():
            change = _difference(entry, clip, modality)
            if change is None:
                continue
            held = _streams_holding(store, clip["clip_id"], modality, committed)
            if held:
                stale.append((clip, f"{modality} {change} (rows in {', '.join(held)})"))
                break
    return stale


def refuse_changed_clips(store: FeatureStore, clips: list[dict]) -> None:
    """One line naming the first changed clip (and how many there are), or nothing."""
    stale = changed_clips(store, clips)
    if not stale:
        return
    clip, change = stale[0]
    more = f" (and {len(stale) - 1} more changed clip(s))" if len(stale) > 1 else ""
    raise UserError(f"{store.url}: clip {clip['clip_id']!r} is not the clip extracted before: "
                    f"{change}{more}; give a changed clip a new clip_id, or extract into a new "
                    "store")


def needs_new_record(stored: dict | None, clip: dict) -> bool:
    """Is the clip-table record missing or out of date (other settings, or a source that is
    not byte-for-byte what one stat says it was)? Costs one stat per source."""
    if stored is None or DEFINITION_FIELD not in stored:
        return True
    definition = stored[DEFINITION_FIELD]
    modalities = [m for m in MODALITIES
                  if (clip.get("text") if m == "text" else _source_of(clip, m))]
    if set(definition) != set(modalities):
        return True
    for modality, entry in definition.items():
        settings = _settings(clip, modality)
        if settings != {k: entry.get(k) for k in settings}:
            return True
        source = _source_of(clip, modality)
        if source:
            stat = source_stat(source)
            old = entry.get("source") or {}
            if any(old.get(k) != stat.get(k) for k in ("path", "files", "size", "mtime_ns")):
                return True
    return False
