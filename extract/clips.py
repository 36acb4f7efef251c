"""The clips file: one JSON object per line describing what to extract for one clip.

Fields: `clip_id` (required), and any of `video` (a file or a frame folder), `frames` (a frame
folder), `audio` (a file; else the video's audio track), `text`, `start`/`end` (seconds, for
clips that are a time range of a longer file), `split`, `speaker`, `boxes`
({"face": {frame: [l, t, r, b]}, "body": [l, t, r, b]}), `fps` (of a frame folder), plus any
dataset fields (kept in the clip table).
"""

from __future__ import annotations

import codecs
import json
import math
import os
from collections.abc import Iterable

from extract.media_base import MAX_FPS, MIN_FPS
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
    for number, line in enumerate(_decoded_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise UserError(f"{path}:{number}: JSON nested too deeply to be a clip") from None
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


# Byte-order marks and the encodings they announce (longest first: UTF-32 LE starts like UTF-16).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _decoded_text(path: str) -> str:
    """The clips file as text: UTF-8, or whatever its byte-order mark says (Windows editors
    save UTF-16 with a BOM); anything else is one line naming the file."""
    with open(path, "rb") as f:
        data = f.read()
    encoding = next((name for bom, name in BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and data[:2] in (b"{\x00", b"\x00{"):
        # UTF-16 without a BOM: every line starts with "{", so its NUL byte gives the order.
        encoding = "utf-16-le" if data[:2] == b"{\x00" else "utf-16-be"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not {encoding} text ({exc.reason} at byte {exc.start}); "
                        "save the clips file as UTF-8") from None


def _number(record: dict, key: str, where: str, clip_id: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    try:
        # float() of a JSON integer like 10**400 overflows: not a time or a rate either.
        number = float(value) if isinstance(value, int | float) else math.nan
    except OverflowError:
        number = math.inf
    if isinstance(value, bool) or not math.isfinite(number):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise UserError(f"{where}: clip {clip_id!r}: {key!r} must be a number, got {shown} "
                        "(a finite one)")
    return number


def check_clips(clips: Iterable[dict]) -> None:
    """The clips file's checks for clips handed over in Python (either runner, before any
    write): `clips[i]` names the one at fault."""
    for i, clip in enumerate(clips):
        check_clip(clip, f"clips[{i}]")


def check_clip(record: object, where: str) -> None:
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object per line")
    if record.get("clip_id") in (None, ""):
        raise UserError(f"{where}: missing or empty 'clip_id'")
    clip_id = check_clip_id(record.get("clip_id"), where)
    if not any(record.get(k) for k in (*MEDIA_FIELDS, "text")):
        raise UserError(f"{where}: clip {clip_id!r} names no video, frames, audio or text")
    for key in (*MEDIA_FIELDS, "text"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise UserError(f"{where}: clip {clip_id!r}: {key!r} must be a string, got "
                            f"{type(record[key]).__name__}")
    start = _number(record, "start", where, clip_id)
    end = _number(record, "end", where, clip_id)
    fps = _number(record, "fps", where, clip_id)
    if start is not None and start < 0:
        raise UserError(f"{where}: clip {clip_id!r}: 'start' is {start:g} s; it must be >= 0")
    if end is not None and end <= (start or 0.0):
        raise UserError(f"{where}: clip {clip_id!r}: 'end' ({end:g} s) must be after 'start' "
                        f"({start or 0.0:g} s)")
    if fps is not None and not MIN_FPS <= fps <= MAX_FPS:
        raise UserError(f"{where}: clip {clip_id!r}: 'fps' is {fps:g}; it must be in "
                        f"{MIN_FPS:g}..{MAX_FPS:g}")
    for key in ("split",):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise UserError(f"{where}: clip {clip_id!r}: {key!r} must be a string, got "
                            f"{type(record[key]).__name__}")
    speaker = record.get("speaker")
    if speaker is not None and (isinstance(speaker, bool) or not isinstance(speaker, str | int)):
        raise UserError(f"{where}: clip {clip_id!r}: 'speaker' must be a string, got "
                        f"{type(speaker).__name__}")
    if record.get("boxes") is not None:
        check_boxes(record["boxes"], f"{where}: clip {clip_id!r}")


def check_boxes(boxes: object, where: str) -> None:
    """`boxes` is {kind: one [l, t, r, b] box, or {frame: box}}: anything else would be
    dropped or misread when the crop is made (a list puts no box on any frame)."""
    if not isinstance(boxes, dict):
        raise UserError(f"{where}: 'boxes' must be an object like {{\"face\": [l, t, r, b]}}, "
                        f"got {type(boxes).__name__}")
    for kind, value in boxes.items():
        if hasattr(value, "tolist"):  # numpy boxes from the Python API
            value = value.tolist()
        if isinstance(value, dict):
            for frame, box in value.items():
                _check_box_value(box, f"{where}: boxes.{kind}[{frame!r}]")
        elif (isinstance(value, list | tuple) and value
              and all(isinstance(b, list | tuple) for b in value)):
            for i, box in enumerate(value):  # one box per frame, in frame order
                _check_box_value(box, f"{where}: boxes.{kind}[{i}]")
        else:
            _check_box_value(value, f"{where}: boxes.{kind}")


def _check_box_value(box: object, where: str) -> None:
    if hasattr(box, "tolist"):  # a numpy box from the Python API
        box = box.tolist()
    numbers = isinstance(box, list | tuple) and len(box) == 4 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in box)
    if not numbers or not all(math.isfinite(float(v)) for v in box):  # type: ignore[union-attr]
        raise UserError(f"{where}: a box is 4 finite numbers [l, t, r, b], got "
                        f"{str(box)[:60]}")


def write_clips_file(clips: Iterable[dict], path: str) -> int:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in clips:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def clip_table_record(record: dict) -> dict:
    """What the clip table keeps of a clips-file record (media paths become `source`), with the
    clip's definition (extract.definition). Defining fields the record lacks are written as
    None, so a redefined clip's record does not keep its old `end` or `video`."""
    from .definition import DEFINITION_FIELD, clip_definition

    out = {k: None for k in (*MEDIA_FIELDS, "text", "start", "end", "fps")}
    out.update({k: v for k, v in record.items() if k not in ("boxes",)})
    out["source"] = record.get("video") or record.get("frames") or record.get("audio")
    out[DEFINITION_FIELD] = clip_definition(record)
    return out
