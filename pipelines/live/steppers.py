"""Heads run causally on live feature rows: each frame's prediction from that frame and the past.

A stepper takes the rows of a batch of consecutive frames and returns one prediction per frame
(a head that carries state over time) or one per completed window (a head that reads a whole
window). `describe()` says which, with the window and hop, for the output's first line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from features_store.errors import UserError
from pipelines.live.windowed import RegnnWindows, TemporalAttentionWindows, TpnAwmWindows


class TRMStepper:
    """Affective-TRM frame by frame, carrying (z_H, z_L) from each frame to the next as
    `TinyRecursiveModel.forward(carry_state=True)` does over a whole clip (`per_frame=true`,
    as `--set profile=fixed` trains). A run with `per_frame=false` resets the state at every
    frame, which this also does: then each frame stands alone.

    The paper profile's input (`sampling=released`: 30 rows spread over the whole clip) needs
    the clip's end before its first row, so it cannot run live; `sampling=clock` reads the
    frames in time order, as they arrive.
    """

    columns = ("valence", "arousal")
    kind = "va"

    def __init__(self, run: Any, dtype: np.dtype) -> None:
        self.dtype = dtype  # the rows' dtype as the head's data loader hands them over
        self.model = run.model
        self.config = run.head.config
        if getattr(self.config, "sampling", "clock") != "clock":
            raise UserError(
                f"{run.paths.root}: trm was trained with sampling={self.config.sampling} "
                "(rows spread over the whole clip, which live cannot know before it ends); "
                "live runs a trm trained with --set profile=fixed (or sampling=clock)")
        self.streams = [s for s in (self.config.audio, self.config.video, self.config.text) if s]
        self.carry = bool(self.config.per_frame)
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.device = next(self.model.parameters()).device

    def describe(self) -> dict:
        return {"stepping": "causal, state carried frame to frame" if self.carry
                else "causal, state reset every frame (per_frame=false)",
                "columns": list(self.columns)}

    def __call__(self, rows: dict[str, np.ndarray], count: int) -> list[tuple[int, np.ndarray]]:
        """(index of the frame in the batch, [valence, arousal]) for every frame."""
        parts = [np.broadcast_to(rows[s], (count, rows[s].shape[1])) for s in self.streams]
        x = torch.from_numpy(np.concatenate(parts, axis=1).astype(self.dtype)
                             .astype(np.float32))[None].to(self.device)
        model = self.model
        with torch.inference_mode():
            x = model.input_norm(x)
            projected = model.input_proj(x)
            shortcut = model.shortcut(x)
            answers = []
            for t in range(count):
                if self.state is None or not self.carry:
                    self.state = model.initial_state(1)
                z_h, z_l = model.step(projected[:, t : t + 1], *self.state)
                self.state = (z_h, z_l)
                answers.append(z_h)
            out = model.output_head(torch.cat(answers, dim=1)) + shortcut
        values = out[0].float().cpu().numpy()
        return [(t, values[t]) for t in range(count)]


STEPPERS = {"trm": TRMStepper,
            "temporal_attention": TemporalAttentionWindows,
            "tpn_awm": TpnAwmWindows,
            "regnn": RegnnWindows}


def stepper_for(run: Any, dtype: np.dtype):
    """The live stepper of a run's head, or one line saying which heads run live. `dtype`:
    the feature rows' dtype as the head's data loader hands them to the model."""
    name = run.head.name
    if name not in STEPPERS:
        raise UserError(f"head {name} does not run live yet; live runs: {', '.join(STEPPERS)}")
    return STEPPERS[name](run, dtype)
