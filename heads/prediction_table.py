"""Predictions as tables: one per clip, the same shape for every head.

Each head's `predict` returns its own structure (valence/arousal per frame, class probabilities
in clip order, REGNN's several generated reactions per clip). `Head.prediction_tables` turns it
into a `PredictionTable` per clip, which is all that `affect predict --media` needs to write one
CSV per clip and draw one plot, whatever the head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PredictionTable:
    """One clip's predictions: `values[r]` is row r, one column per name in `columns`.

    kind "series": rows are frames, `time_s[r]` is the row's time from the clip's first frame;
    `sample[r]` (REGNN) says which generated reaction the row belongs to.
    kind "classes": one row of class probabilities; `columns` are the class names.
    """

    columns: list[str]
    values: np.ndarray
    kind: str = "series"
    time_s: np.ndarray | None = None
    sample: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, np.float32).reshape(-1, len(self.columns))
        if self.kind not in ("series", "classes"):
            raise ValueError(f"kind {self.kind!r}: expected 'series' or 'classes'")


def column_names(width: int, names: Sequence[str] | None = None) -> list[str]:
    """`names` when they fit the width, else output_0 ... output_{width-1}."""
    names = list(names or [])
    return names if len(names) == width else [f"output_{i}" for i in range(width)]


def series_tables(predictions: Mapping[str, Any], names: Sequence[str] | None,
                  frame_shift_s: float | None) -> dict[str, PredictionTable]:
    """clip -> [T, C] per-frame outputs as tables (times at `frame_shift_s`, if known)."""
    tables = {}
    for clip_id, values in predictions.items():
        values = np.asarray(values, np.float32)
        values = values.reshape(len(values), -1)
        times = None if frame_shift_s is None else np.arange(len(values)) * float(frame_shift_s)
        tables[clip_id] = PredictionTable(column_names(values.shape[1], names), values,
                                          time_s=times)
    return tables


def sample_tables(predictions: Mapping[str, Any], names: Sequence[str] | None,
                  frame_shift_s: float | None) -> dict[str, PredictionTable]:
    """clip -> [S, T, C] generated samples as tables: the S samples one after another."""
    tables = {}
    for clip_id, values in predictions.items():
        values = np.asarray(values, np.float32)
        n_samples, frames, width = values.shape
        times = np.tile(np.arange(frames) * float(frame_shift_s or 1.0), n_samples)
        tables[clip_id] = PredictionTable(
            column_names(width, names), values.reshape(n_samples * frames, width),
            time_s=times if frame_shift_s is not None else None,
            sample=np.repeat(np.arange(n_samples), frames))
    return tables


def class_tables(predictions: Mapping[str, Any], classes: Sequence[str]
                 ) -> dict[str, PredictionTable]:
    """`{"clip_ids": [...], "probabilities": [N, C]}` as one single-row table per clip."""
    probabilities = np.asarray(predictions["probabilities"], np.float32)
    return {clip_id: PredictionTable(column_names(probabilities.shape[1], classes), row,
                                     kind="classes")
            for clip_id, row in zip(predictions["clip_ids"], probabilities)}
