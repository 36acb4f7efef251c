"""Putting streams of different rates onto one timeline (nearest, mean-pool, linear).

Row i of a stream covers the time `t0 + i * frame_shift_s`; a per-clip stream
(`frame_shift_s` None) has one row that holds for the whole clip.
"""

from __future__ import annotations

import numpy as np

METHODS = ("nearest", "mean", "linear")


def span_end(t0: float, n_rows: int, frame_shift_s: float | None, t_end: float | None) -> float:
    if t_end is not None:
        return t_end
    return t0 + n_rows * (frame_shift_s or 0.0)


def to_timeline(
    rows: np.ndarray,
    src_t0: float,
    src_shift: float | None,
    targets: np.ndarray,
    target_shift: float,
    method: str = "nearest",
) -> tuple[np.ndarray, np.ndarray]:
    """Resample `rows` [N, D] onto `targets` (times in seconds) -> ([T, D] float32, valid [T])."""
    if method not in METHODS:
        raise ValueError(f"alignment method must be one of {METHODS}, got {method!r}")
    n, dim = rows.shape
    out = np.zeros((len(targets), dim), dtype=np.float32)
    if n == 0 or len(targets) == 0:
        return out, np.zeros(len(targets), dtype=bool)
    values = rows.astype(np.float32, copy=False)
    if src_shift is None:
        out[:] = values[0]
        return out, np.ones(len(targets), dtype=bool)
    position = (targets - src_t0) / src_shift  # fractional source row of each target time
    valid = (position > -0.5) & (position < n - 0.5)
    if method == "nearest":
        idx = np.clip(np.rint(position).astype(np.int64), 0, n - 1)
        out[:] = values[idx]
    elif method == "linear":
        clipped = np.clip(position, 0, n - 1)
        lo = np.floor(clipped).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        frac = (clipped - lo)[:, None].astype(np.float32)
        out[:] = values[lo] * (1 - frac) + values[hi] * frac
    else:
        # Mean of the source rows whose times fall in [t - shift/2, t + shift/2); a target
        # frame with no source row inside (source slower than target) takes the nearest row.
        half = target_shift / 2 / src_shift
        starts = np.clip(np.ceil(position - half - 1e-9).astype(np.int64), 0, n)
        stops = np.clip(np.ceil(position + half - 1e-9).astype(np.int64), 0, n)
        cumsum = np.concatenate([np.zeros((1, dim), np.float64), np.cumsum(values, axis=0)])
        counts = stops - starts
        has = counts > 0
        out[has] = (cumsum[stops[has]] - cumsum[starts[has]]) / counts[has, None]
        nearest = np.clip(np.rint(position).astype(np.int64), 0, n - 1)
        out[~has] = values[nearest[~has]]
    return out, valid
