"""The clips file: one JSON object per line describing what to extract for one clip.

Fields: `clip_id` (required), and any of `video` (a file or a frame folder), `frames` (a frame
folder), `audio` (a file; else the video's audio track), `text`, `start`/`end` (seconds, for
clips that are a time range of a longer file), `split`, `speaker`, `boxes`
({"face": {frame: [l, t, r, b]}, "body": [l, t, r, b]}), `fps` (of a frame folder), plus any
dataset fields (kept in the clip table).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from features_store.errors import UserError
from features_store.paths import check_clip_id

MEDIA_FIELDS = ("video", "frames", "audio")
KNOWN_FIELDS = ("clip_id", *MEDIA_FIELDS, "text", "start", "end", "split", "speaker", "boxes",
                "fps")


def read_clips_file(path: str) -> list[dict]:
    """Parse and check a clips file; a bad line is a one-line error naming file and line."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: clips file not found")
    clips: list[dict] = []
    seen: dict[str, int] = {}
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            check_clip(record, f"{path}:{number}")
            if record["clip_id"] in seen:
                raise UserError(f"{path}:{number}: clip_id {record['clip_id']!r} repeats line "
                                f"{seen[record['clip_id']]}")
            seen[record["clip_id"]] = number
            for field in MEDIA_FIELDS:
                value = record.get(field)
                if isinstance(value, str) and not os.path.isabs(value):
                    record[field] = os.path.join(base, value)  # relative to the clips file
            clips.append(record)
    if not clips:
        raise UserError(f"{path}: no clips in the file")
    return clips


def check_clip(record: object, where: str) -> None:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object per line")
    if record.get("clip_id") in (None, ""):
        raise UserError(f"{where}: missing or empty 'clip_id'")
    clip_id = check_clip_id(record.get("clip_id"), where)
    if not any(record.get(k) for k in (*MEDIA_FIELDS, "text")):
        raise UserError(f"{where}: clip {clip_id!r} names no video, frames, audio or text")
    for key in ("start", "end", "fps"):
        if key in record and record[key] is not None and not isinstance(record[key], int | float):
            raise UserError(f"{where}: {key!r} must be a number of seconds")


def write_clips_file(clips: Iterable[dict], path: str) -> int:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in clips:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def clip_table_record(record: dict) -> dict:
    """What the clip table keeps of a clips-file record (media paths become `source`)."""
    out = {k: v for k, v in record.items() if k not in ("boxes",)}
    out["source"] = record.get("video") or record.get("frames") or record.get("audio")
    return out
