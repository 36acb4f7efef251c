"""Export a stream to one file per clip, and import such folders back.

The papers' own scripts read and write one `.npy`/`.pth` per clip (the REACT baseline reads
`Video_features/<site>/<group>/<pid>/<clip>.pth`). Export reproduces those trees from the store
(clip ids with `/` become folders); import brings features users already have into the store.
"""

from __future__ import annotations

import math
import os
import pickle
import stat
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import UserError, first_line
from .manifest import StreamInfo
from .paths import check_clip_id, safe_join
from .store import FeatureStore

FORMATS = ("npy", "pth")
ROWS_PER_PART = 1 << 20


def export_stream(
    store: FeatureStore,
    stream: str,
    out_dir: str,
    fmt: str = "npy",
    dtype: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write `out_dir/<clip_id>.<fmt>` for every clip of the stream; returns the clip count."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if dtype:
        try:
            kind = np.dtype(dtype).kind
        except TypeError:
            kind = ""
        if kind not in ("f", "i", "u", "b"):
            raise UserError(f"--dtype {dtype[:40]!r}: not a numeric numpy dtype (e.g. float32, "
                            "float16, int64)")
    info = store.resolve(stream)
    array = store.load_stream(info)
    for clip_id in array.clip_ids:
        rows = np.asarray(array.clip(clip_id))
        if dtype:
            rows = rows.astype(dtype)
        path = str(safe_join(out_dir, clip_id, suffix=f".{fmt}"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if fmt == "npy":
            np.save(path, rows)
        else:
            import torch

            torch.save(torch.from_numpy(np.ascontiguousarray(rows)), path)
        if progress:
            progress(1)
    return len(array.clip_ids)


def _load_clip_file(path: str) -> np.ndarray:
    try:
        if path.endswith(".npy"):
            value = np.load(path, allow_pickle=False)
            if not isinstance(value, np.ndarray):  # an .npz archive saved under a .npy name
                value.close()
                raise UserError(f"{path}: is an .npz archive, not one .npy array")
        else:
            import torch

            value = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor):
                raise UserError(f"{path}: holds a {type(value).__name__}, expected one tensor")
            value = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
    except UserError:
        raise
    except pickle.UnpicklingError:
        # torch's own message is many lines, ending in advice to unpickle anyway: never.
        raise UserError(f"{path}: holds pickled Python objects, which are never unpickled; "
                        "save a plain tensor (torch.save(tensor, path)) or an .npy") from None
    except Exception as exc:  # numpy/torch raise many types for a damaged file
        raise UserError(f"{path}: cannot read ({type(exc).__name__}: "
                        f"{first_line(exc)})") from None
    if value.dtype.kind not in "fiub":
        raise UserError(f"{path}: array of dtype {value.dtype} is not numeric")
    if value.ndim == 1:
        value = value[None, :]
    if value.ndim != 2:
        raise UserError(f"{path}: array of shape {value.shape}, expected [T, D] or [D]")
    if value.shape[1] == 0:
        raise UserError(f"{path}: array of shape {value.shape} has no columns (D = 0)")
    return value


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@dataclass
class ImportReport:
    stream: StreamInfo
    clips: int
    rows: int


def import_folder(
    store: FeatureStore,
    folder: str,
    name: str,
    frame_shift_s: float | None,
    kind: str = "feature",
    dtype: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import every `.npy`/`.pth` under `folder` as clip `<relative path without suffix>`."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: not a folder")
    if frame_shift_s is not None and not (math.isfinite(frame_shift_s) and frame_shift_s > 0):
        raise UserError(f"--frame-shift {frame_shift_s}: must be a positive number of seconds "
                        "(omit it for one row per clip)")
    files = []
    for root, _, names in os.walk(folder):
        for n in names:
            if n.endswith((".npy", ".pth", ".pt")):
                path = os.path.join(root, n)
                # A FIFO or device named like an array would block the read forever.
                if not _is_regular_file(path):
                    raise UserError(f"{path}: not a regular file (a FIFO, device or broken "
                                    "link); import reads plain .npy/.pth files only")
                files.append(path)
    files.sort()
    if not files:
        raise UserError(f"{folder}: no .npy/.pth files found")
    clip_of: dict[str, str] = {}  # every file checked before the stream exists: no empty stream
    for path in files:
        clip_id = os.path.splitext(os.path.relpath(path, folder))[0].replace(os.sep, "/")
        check_clip_id(clip_id, path)
        if clip_id in clip_of:
            raise UserError(f"{path}: clip {clip_id!r} is also in {clip_of[clip_id]}; keep one "
                            "file per clip")
        clip_of[clip_id] = path
    first = _load_clip_file(files[0])
    info = StreamInfo(
        name=name, kind=kind, dim=int(first.shape[1]),
        dtype=dtype or (str(first.dtype) if first.dtype.kind == "f" else "float32"),
        frame_shift_s=frame_shift_s, weights="imported",
        preprocessing={"imported_from": os.path.abspath(folder)}, code_version="import-1",
    )
    info = store.create_stream(info)
    # The clips are the store's clips too (`store ls`, splits, verify): add the new ones to the
    # clip table, keeping what it already says about clips it has.
    known = set(store.clip_ids())
    store.add_clips({"clip_id": c, "source": p} for c, p in clip_of.items() if c not in known)
    done = store.committed_clip_ids(info)
    part, part_rows, rows_total, clips = None, 0, 0, 0
    part_no = len(store.committed_parts(info))
    try:
        for clip_id, path in clip_of.items():
            if clip_id in done:
                continue
            rows = first if path == files[0] else _load_clip_file(path)
            if rows.shape[1] != info.dim:
                raise UserError(f"{path}: dim {rows.shape[1]}, the other files have {info.dim}")
            if part is None:
                part = store.part_writer(info, f"import-{part_no:06d}")
                part_no += 1
            part.write_clip(clip_id, rows, t0=0.0)
            part_rows += len(rows)
            rows_total += len(rows)
            clips += 1
            if progress:
                progress(1)
            if part_rows >= ROWS_PER_PART:
                part.commit()
                part, part_rows = None, 0
        if part is not None:
            part.commit()
    except BaseException:
        if part is not None:
            part.abort()  # the parts committed so far stay; the rerun resumes after them
        raise
    store.finalize()
    return ImportReport(info, clips, rows_total)
