"""Post-processing of per-frame valence/arousal: clip to [-1, 1], centred moving average.

The ABAW 2022 transformer-LSTM entries smoothed each video's predictions with a centred window
(half-width 50 frames for valence, 20 for arousal at 30 Hz): valence changes more slowly.
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


def smooth_va(pred: np.ndarray, half_widths: Sequence[int] = (50, 20)) -> np.ndarray:
    """Clip `pred` [T, C] to [-1, 1] and smooth column c with half-width `half_widths[c]`."""
    pred = np.clip(np.asarray(pred, dtype=np.float32), -1.0, 1.0)
    if pred.ndim != 2 or pred.shape[1] != len(half_widths):
        raise ValueError(f"expected [T, {len(half_widths)}] predictions, got {pred.shape}")
    return np.stack([moving_average(pred[:, c], w) for c, w in enumerate(half_widths)], axis=1)
