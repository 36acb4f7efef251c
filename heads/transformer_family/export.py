"""ABAW valence-arousal challenge files and run ensembles.

The challenge expects one text file per video, named after the video (`<vid>.txt`, or
`<vid>_left.txt` / `<vid>_right.txt` for two annotated people), with the header line
`valence,arousal` and one `v,a` line per frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from features_store.paths import safe_join

HEADER = "valence,arousal"


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


def challenge_name(clip_id: str) -> str:
    """File stem of a clip in the challenge layout: the last component of the clip id."""
    return clip_id.rstrip("/").split("/")[-1]


def write_challenge_files(predictions: Mapping[str, np.ndarray], out_dir: Path) -> list[Path]:
    """One `<vid>.txt` per clip: header `valence,arousal`, then one line per frame."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    seen: dict[str, str] = {}
    for clip_id in sorted(predictions):
        name = challenge_name(clip_id)
        if name in seen:
            raise _user_error(f"{out_dir}: clips {seen[name]!r} and {clip_id!r} would both be "
                              f"written to {name}.txt")
        seen[name] = clip_id
        pred = np.asarray(predictions[clip_id], dtype=np.float32)
        if pred.ndim != 2 or pred.shape[1] != 2:
            raise ValueError(f"{clip_id}: expected [T, 2] valence/arousal, got {pred.shape}")
        path = safe_join(out_dir, name, suffix=".txt")
        lines = [HEADER, *(f"{v:.6f},{a:.6f}" for v, a in pred)]
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written


def read_challenge_file(path: Path) -> np.ndarray:
    """Read a challenge file (predictions or Aff-Wild2 labels) into [T, 2] float32."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip().replace(" ", "").lower() != HEADER:
        raise _user_error(f"{path}:1: expected the header {HEADER!r}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            v, a = (float(x) for x in line.split(","))
        except ValueError:
            message = f"{path}:{number}: expected 'valence,arousal', got {line!r}"
            raise _user_error(message) from None
        rows.append((v, a))
    return np.asarray(rows, dtype=np.float32).reshape(-1, 2)


def ensemble_mean(runs: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Mean of several runs' per-video predictions; every run must cover the same clips."""
    if not runs:
        raise _user_error("ensemble: no runs given")
    clips = set(runs[0])
    for k, run in enumerate(runs[1:], start=2):
        if set(run) != clips:
            missing = sorted(clips ^ set(run))[:3]
            raise _user_error(f"ensemble: run {k} predicts different clips than run 1 "
                              f"(e.g. {missing})")
    out: dict[str, np.ndarray] = {}
    for clip_id in sorted(clips):
        shapes = {np.shape(run[clip_id]) for run in runs}
        if len(shapes) != 1:
            raise _user_error(f"ensemble: clip {clip_id!r} has different lengths across runs "
                              f"({sorted(shapes)})")
        out[clip_id] = np.mean([np.asarray(run[clip_id], np.float32) for run in runs], axis=0)
    return out
