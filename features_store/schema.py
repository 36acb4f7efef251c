"""What the store's metadata files may hold, checked where they are read.

A store is input like any other: users share stores, copy them between machines and edit them by
hand. Every JSON document read from a store (stream.json, manifests, index.json, the clip table)
goes through one of these checks before any field is used, so a wrong type, a NaN time or a
missing field is one line naming the file, never a traceback deep in a reader, and a value that
would be used as a number is a finite number of the right kind.

Each check raises `MetadataError` (a ValueError) saying what is wrong; the caller, which knows
the file, turns it into a `UserError` naming it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .names import name_problem
from .paths import clip_id_problem

# Bigger than any real part or clip (2^40 rows of one float is 4 TiB): a row count or dim
# beyond it is damage, and would otherwise make a reader allocate without end.
MAX_COUNT = 1 << 40


class MetadataError(ValueError):
    """A metadata document does not hold what the store wrote there."""


def expect_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MetadataError(f"{what} is a {type(value).__name__}, expected a JSON object")
    return value


def expect_str(value: Any, what: str, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or (not allow_empty and not value):
        kind = "a string" if allow_empty else "a non-empty string"
        raise MetadataError(f"{what} is {_shown(value)}, expected {kind}")
    return value


def expect_int(value: Any, what: str, low: int = 0, high: int = MAX_COUNT) -> int:
    # bool is an int in Python, never in our files
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MetadataError(f"{what} is {_shown(value)}, expected an integer in {low}..{high}")
    return value


def expect_float(value: Any, what: str, optional: bool = False, positive: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetadataError(f"{what} is {_shown(value)}, expected a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        raise MetadataError(f"{what} is out of range") from None
    if not math.isfinite(number) or (positive and number <= 0):
        raise MetadataError(f"{what} is {number!r}, expected a finite "
                            f"{'positive ' if positive else ''}number")
    return value


def expect_name(value: Any, what: str) -> str:
    """A stream key or part id: one safe path component (features_store.names)."""
    problem = name_problem(value)
    if problem:
        raise MetadataError(f"{what} {problem}")
    return value


def expect_dtype(value: Any, what: str) -> str:
    expect_str(value, what, allow_empty=False)
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise MetadataError(f"{what} {value!r} is not a numpy dtype") from None
    if dtype.kind not in "fiub":
        raise MetadataError(f"{what} {value!r} is not a numeric dtype")
    return value


def expect_clip_id(value: Any, what: str) -> str:
    problem = clip_id_problem(value)
    if problem:
        raise MetadataError(f"{what}: {problem}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_stream_info(data: Any) -> dict[str, Any]:
    data = expect_dict(data, "stream.json")
    expect_str(data.get("name"), "name", allow_empty=False)
    if data.get("kind", "feature") not in ("feature", "label"):
        raise MetadataError(f"kind is {_shown(data.get('kind'))}, expected 'feature' or 'label'")
    expect_int(data.get("dim"), "dim", low=1)
    expect_dtype(data.get("dtype", "float32"), "dtype")
    expect_float(data.get("frame_shift_s"), "frame_shift_s", optional=True, positive=True)
    expect_float(data.get("t0", 0.0), "t0")
    expect_name(data.get("key"), "stream key")
    for name in ("alias", "created", "code_version"):
        expect_str(data.get(name, ""), name)
    for name in ("weights", "weights_sha256"):
        if data.get(name) is not None:
            expect_str(data[name], name)
    for name in ("preprocessing", "extra"):
        expect_dict(data.get(name, {}), name)
    if data.get("claims") is not None:
        claims = expect_dict(data["claims"], "claims")
        for name in ("splits", "clip_ids"):
            if name in claims and not (isinstance(claims[name], list)
                                       and all(isinstance(c, str) for c in claims[name])):
                raise MetadataError(f"claims.{name} must be a list of strings")
    return data


def check_clip_entry(data: Any, what: str) -> dict[str, Any]:
    data = expect_dict(data, what)
    expect_clip_id(data.get("clip_id"), f"{what}.clip_id")
    expect_int(data.get("row_start"), f"{what}.row_start")
    expect_int(data.get("n_rows"), f"{what}.n_rows")
    expect_float(data.get("t0", 0.0), f"{what}.t0")
    expect_float(data.get("t_end"), f"{what}.t_end", optional=True)
    expect_str(data.get("status", "ok"), f"{what}.status")
    return data


def check_manifest(data: Any) -> dict[str, Any]:
    data = expect_dict(data, "manifest")
    expect_name(data.get("part_id"), "part id")
    expect_name(data.get("stream_key"), "stream key")
    expect_int(data.get("dim"), "dim", low=1)
    expect_dtype(data.get("dtype"), "dtype")
    expect_int(data.get("n_rows"), "n_rows")
    expect_float(data.get("commit_time", 0.0), "commit_time")
    for name in ("created", "writer", "run_id", "sha256"):
        expect_str(data.get(name, ""), name)
    expect_int(data.get("schema", 1), "schema")
    expect_dict(data.get("numerics", {}), "numerics")
    discarded = data.get("discarded", [])
    if not isinstance(discarded, list) or not all(isinstance(c, str) for c in discarded):
        raise MetadataError("discarded must be a list of clip ids")
    clips = data.get("clips")
    if not isinstance(clips, list):
        raise MetadataError(f"clips is {_shown(clips)}, expected a list")
    for i, entry in enumerate(clips):
        check_clip_entry(entry, f"clips[{i}]")
    return data


def check_index(data: Any) -> dict[str, Any]:
    data = expect_dict(data, "index")
    expect_int(data.get("dim"), "dim", low=1)
    columns = ("clip_id", "part_id", "row_start", "n_rows", "t0", "t_end")
    for name in ("parts", *columns):
        if not isinstance(data.get(name), list):
            raise MetadataError(f"{name} is {_shown(data.get(name))}, expected a list")
    lengths = {len(data[name]) for name in columns}
    if len(lengths) != 1:
        raise MetadataError("its columns have different lengths")
    for i in range(len(data["clip_id"])):
        expect_clip_id(data["clip_id"][i], f"clip_id[{i}]")
        expect_name(data["part_id"][i], f"part_id[{i}]")
        expect_int(data["row_start"][i], f"row_start[{i}]")
        expect_int(data["n_rows"][i], f"n_rows[{i}]")
        expect_float(data["t0"][i], f"t0[{i}]")
        expect_float(data["t_end"][i], f"t_end[{i}]", optional=True)
    for i, part in enumerate(data["parts"]):
        expect_name(part, f"parts[{i}]")
    duplicates = data.get("duplicates", [])
    if not isinstance(duplicates, list) or not all(
            isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d)
            for d in duplicates):
        raise MetadataError("duplicates must be a list of [clip_id, part_id] pairs")
    return data


def check_clip_records(data: Any, what: str = "clip table") -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise MetadataError(f"{what} is a {type(data).__name__}, expected a list of records")
    for i, record in enumerate(data):
        expect_dict(record, f"record {i}")
        expect_clip_id(record.get("clip_id"), f"record {i}")
    return data


def check_clip_table(data: Any) -> dict[str, Any]:
    data = expect_dict(data, "table.json")
    batches = data.get("batches")
    if not isinstance(batches, list) or not all(isinstance(b, str) for b in batches):
        raise MetadataError("batches must be a list of file names")
    check_clip_records(data.get("clips"), "clips")
    return data
