"""Post-processing of per-frame valence/arousal: centred moving average, clip to [-1, 1].

The ABAW 2022 transformer-LSTM entries smoothed each video's raw predictions with a centred
window (half-width 50 frames for valence, 20 for arousal at 30 Hz: valence changes more slowly)
and then clipped to [-1, 1] (test.py: smooth_prediction, then process_preds). Clipping first is
our variant (`postprocess="clip-then-smooth"`): an outlier then pulls its neighbours less.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def moving_average(x: np.ndarray, half_width: int) -> np.ndarray:
    """Centred moving average of a 1-D series over [t - half_width, t + half_width].

    Near the ends the window shrinks to the frames that exist (no zero padding, which would
    pull the first and last frames towards 0).
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if half_width <= 0 or n == 0:
        return x.astype(np.float32)
    cumsum = np.concatenate([[0.0], np.cumsum(x)])
    t = np.arange(n)
    lo = np.clip(t - half_width, 0, n)
    hi = np.clip(t + half_width + 1, 0, n)
    return ((cumsum[hi] - cumsum[lo]) / (hi - lo)).astype(np.float32)


POSTPROCESS_ORDERS = ("smooth-then-clip", "clip-then-smooth")


def _smooth_columns(pred: np.ndarray, half_widths: Sequence[int]) -> np.ndarray:
    if pred.ndim != 2 or pred.shape[1] != len(half_widths):
        raise ValueError(f"expected [T, {len(half_widths)}] predictions, got {pred.shape}")
    return np.stack([moving_average(pred[:, c], w) for c, w in enumerate(half_widths)], axis=1)


def smooth_va(pred: np.ndarray, half_widths: Sequence[int] = (50, 20),
              order: str = "smooth-then-clip") -> np.ndarray:
    """Smooth column c of `pred` [T, C] with half-width `half_widths[c]` and clip to [-1, 1],
    in `order` (the official smooth-then-clip by default)."""
    pred = np.asarray(pred, dtype=np.float32)
    if order == "smooth-then-clip":
        return np.clip(_smooth_columns(pred, half_widths), -1.0, 1.0)
    if order == "clip-then-smooth":
        return _smooth_columns(np.clip(pred, -1.0, 1.0), half_widths)
    raise ValueError(f"order={order!r}: choose one of {', '.join(POSTPROCESS_ORDERS)}")
