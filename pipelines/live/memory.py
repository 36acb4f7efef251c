"""The transformer family live: segment by segment, carrying the state between segments.

How the head predicts a clip (`heads/transformer_family/head.py`): the clip is cut into
`chunk`-frame segments from its first frame, and each segment goes through the model with the
state the previous segment left (transformer-lstm: the LSTM's (h, c); transformer-attention: the
memory of pooled encoder outputs of earlier segments; transformer: none; fclstm-xl: the LSTM's).
Inside a segment the transformer encoder attends over every frame of it, later ones included, so
a frame's prediction needs its whole segment: live runs a segment as soon as its last frame has
arrived, and a segment's first frame waits a whole segment (the latency). The last, shorter
segment runs when the media ends (`finish`), as predict runs a clip's remainder. fclstm-xl has
no encoder: its FC and LSTM look at the past only, so it steps every batch of frames as it comes.

The model is not changed: each segment is one call of the model's own `forward`, on a batch of
one clip, as predict's batches call it.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from heads.transformer_family.models import (
    FCLSTMRegressor,
    TransformerAttentionRegressor,
    TransformerLSTMRegressor,
)


def _carried(model: torch.nn.Module, config: Any) -> str:
    """What one segment hands to the next, in words."""
    if isinstance(model, TransformerLSTMRegressor):
        return "the LSTM state carried from segment to segment"
    if isinstance(model, TransformerAttentionRegressor):
        return (f"a memory of the last {config.memory_slots} means of {config.memory_pool} "
                "encoded frames carried from segment to segment")
    return "nothing carried (each segment stands alone)"


class SegmentStepper:
    """A transformer-family run on live rows, giving per frame what its predict gives on the
    whole file. A run with per-target checkpoints (the paper profile) predicts valence with its
    best-valence weights and arousal with its best-arousal weights, each model with its own
    state, as predict runs the clip once with each."""

    columns = ("valence", "arousal")
    kind = "va"

    def __init__(self, run: Any, dtype: np.dtype) -> None:
        # `dtype` is not needed: the family's loader hands the model float32 copies of the
        # stored values, which the live rows already are.
        config = run.head.config
        self.features = list(config.features)
        # the run's train-split statistics, applied in float32 as FrameSequences.normalize does
        self.mean = None if run.data.mean is None else np.asarray(run.data.mean, np.float32)
        self.std = None if run.data.std is None else np.asarray(run.data.std, np.float32)
        self.device = next(run.model.parameters()).device
        own = run.model.state_dict()
        weights = run.head.column_weights(own)
        if all(w is own for w in weights):
            self.models = [run.model]
        else:
            self.models = []
            for column_weights in weights:
                model = copy.deepcopy(run.model)
                model.load_state_dict(column_weights)
                self.models.append(model.eval())
        self.states = [m.initial_state(1, self.device) for m in self.models]
        self.causal = isinstance(run.model, FCLSTMRegressor)
        self.segment = int(config.chunk)
        # An answer may name a frame of an earlier batch: up to a segment back (the loop keeps
        # that many frames).
        self.holds = 0 if self.causal else self.segment
        self.waiting: np.ndarray | None = None  # normalised rows of the unfinished segment
        self.note = _carried(run.model, config)

    def describe(self) -> dict:
        targets = ("valence and arousal each from its own best checkpoint, two models side by "
                   "side" if len(self.models) == 2 else "one model for both columns")
        if self.causal:
            stepping = "causal, LSTM state carried frame to frame"
            return {"stepping": stepping, "targets": targets, "columns": list(self.columns)}
        stepping = (f"segments of {self.segment} frames: the transformer encoder attends over a "
                    "whole segment, so its frames are predicted together once its last frame "
                    f"arrives (latency up to one segment); {self.note}; the last, shorter "
                    "segment when the source ends")
        return {"stepping": stepping, "segment_frames": self.segment, "targets": targets,
                "columns": list(self.columns)}

    def __call__(self, rows: dict[str, np.ndarray], count: int) -> list[tuple[int, np.ndarray]]:
        """(index of the frame relative to this batch, [valence, arousal]) for every frame whose
        segment is complete; a negative index names a frame of an earlier batch (-1: the last
        frame before this batch)."""
        x = np.concatenate([np.broadcast_to(rows[a], (count, rows[a].shape[1]))
                            for a in self.features], axis=1).astype(np.float32)
        if self.mean is not None:
            x -= self.mean
            x /= self.std
        first = 0 if self.waiting is None else -len(self.waiting)
        self.waiting = x if self.waiting is None else np.concatenate([self.waiting, x])
        answers: list[tuple[int, np.ndarray]] = []
        size = len(self.waiting) if self.causal else self.segment
        while size and len(self.waiting) >= size:
            answers += [(first + i, v) for i, v in enumerate(self._run(self.waiting[:size]))]
            first += size
            self.waiting = self.waiting[size:]
        return answers

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """The frames of the unfinished segment once the source has ended, indexed back from
        the end (-1: the last frame)."""
        if self.waiting is None or not len(self.waiting):
            return []
        rows, self.waiting = self.waiting, None
        return [(i - len(rows), v) for i, v in enumerate(self._run(rows))]

    def _run(self, rows: np.ndarray) -> np.ndarray:
        """One segment through each model, carrying its state: [len(rows), 2]."""
        x = torch.from_numpy(np.ascontiguousarray(rows))[None].to(self.device)
        present = torch.ones(1, len(rows), dtype=torch.bool, device=self.device)
        outputs = []
        with torch.no_grad():  # as predict runs the model
            for k, model in enumerate(self.models):
                out, state = model(x, present, self.states[k])
                self.states[k] = model.detach_state(state)
                outputs.append(out[0].float().cpu().numpy())
        if len(outputs) == 1:
            return outputs[0]
        return np.stack([outputs[0][:, 0], outputs[1][:, 1]], axis=1)
