"""Affective-TRM as a head: CREMA-D valence/arousal from Dasheng + HSEmotion + EmbeddingGemma.

Inputs: the audio (Dasheng-base, 768-d), video (HSEmotion EfficientNet-B0, 1280-d) and text
(EmbeddingGemma, 768-d, one per utterance) streams aligned on the video stream's timeline and
concatenated -> [T, 2816]. Target: the clip's circumplex valence/arousal (`cremad-va`, written
at ingest); the split is the store's (speaker independent, as ingested).

Where this differs from the public code, and how to get the original back:
- Time: the state (z_H, z_L) is carried from frame to frame over the whole clip and every frame
  is supervised with the clip's target (the public code sets halt_max_steps=1, which resets the
  state at every frame, so only the last frame's input reaches the supervised output).
  `--set per_frame=false` gives that behaviour: state reset per frame, last frame supervised.
  The last frame is each clip's own last frame; the original pads a batch with zeros and reads
  the padded position, so shorter clips are predicted from zero input (not reproduced).
- Length and alignment: the whole clip on the video clock with audio aligned by time (the
  original truncates to 30 frames and pairs audio and video rows by index without aligning);
  `--set max_frames=30` truncates as it does.
- Loss: (1 - CCC_V + 1 - CCC_A) / 2 + 0.25 MSE with the standard CCC; the public formula has an
  extra sigma_x * sigma_y factor in the numerator: `--set ccc_formula=original`.
- The input LayerNorm is trained (the public code builds it outside the optimiser, so it stays
  at its initial identity): `--set input_norm_trainable=false` freezes it as the original does.
- Plateau schedule: stepped on the validation loss as the public code does (the mean of its
  batches' losses, clips in order); `--set plateau_metric=ccc_mean` steps on the validation
  CCC instead.
- Halting exploration (the public code's 5% chance of not halting, which repeats the previous
  frame's input) is not reproduced: with one step per frame it only injects input noise.

Metrics: CCC_V, CCC_A and their mean over the clips of a split, each clip predicted by its last
frame's output (the state has then seen the whole clip; in the original mode, its last frame);
`frame_ccc_*` score every frame against the clip's target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from features_store.paths import safe_join
from heads.base import Head, Recipe
from heads.metrics import ccc, ccc_loss
from heads.prediction_table import PredictionTable, series_tables
from heads.registry import register_head
from heads.trm.config import TRMConfig
from heads.trm.data import AlignedClips, load_aligned_clips
from heads.trm.model import TinyRecursiveModel

TRAIN_SPLIT = "train"
CCC_FORMULAS = ("standard", "original")


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


def original_ccc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8
                      ) -> torch.Tensor:
    """The public code's 1 - CCC of one channel: 2 cov sigma_x sigma_y / (var_x + var_y +
    (mu_x - mu_y)^2), unbiased variances, population covariance."""
    mu_p, mu_t = pred.mean(), target.mean()
    cov = ((pred - mu_p) * (target - mu_t)).mean()
    value = 2 * cov * pred.std() * target.std() / (pred.var() + target.var()
                                                   + (mu_p - mu_t) ** 2 + eps)
    return 1.0 - value


def trm_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
             mse_weight: float, formula: str = "standard") -> torch.Tensor:
    """(1 - CCC_V + 1 - CCC_A) / 2 + mse_weight * MSE over the valid frames; pred and target
    [..., 2], mask pred.shape[:-1]. Computed in float32."""
    pred, target = pred.float(), target.float()
    if formula == "standard":
        ccc_part = ccc_loss(pred, target, mask)
    else:
        p, t = pred[mask], target[mask]
        ccc_part = (original_ccc_loss(p[:, 0], t[:, 0]) + original_ccc_loss(p[:, 1], t[:, 1])) / 2
    weight = mask.unsqueeze(-1).to(pred.dtype)
    mse = ((pred - target) ** 2 * weight).sum() / (2 * weight.sum()).clamp_min(1.0)
    return ccc_part + mse_weight * mse


@dataclass
class TRMData:
    """Aligned clips per split (loaded on first use)."""

    store: Any
    config: TRMConfig
    splits: dict[str, AlignedClips] = field(default_factory=dict)
    labelled_only: bool = True  # False when predicting: unlabelled clips are kept (NaN targets)

    @property
    def streams(self) -> list[str]:
        c = self.config
        return [s for s in (c.audio, c.video, c.text) if s]

    def clips(self, split: str) -> AlignedClips:
        if split not in self.splits:
            self.splits[split] = load_aligned_clips(self.store, split, self.streams,
                                                    self.config.video, self.config.labels,
                                                    require_labels=self.labelled_only)
        return self.splits[split]

    @property
    def dim(self) -> int:
        return self.clips(TRAIN_SPLIT).dim


class ClipBatches:
    """The batches of one pass over a split in a given order (len() = number of batches)."""

    def __init__(self, clips: AlignedClips, order: np.ndarray, batch_size: int,
                 max_frames: int) -> None:
        self.clips, self.order = clips, order
        self.batch_size, self.max_frames = batch_size, max_frames

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.order), self.batch_size):
            yield self.clips.batch(self.order[start : start + self.batch_size], self.max_frames)


@register_head
class TRMHead(Head):
    """Tiny Recursive Model over aligned audio, video and text frames (see the module doc)."""

    name = "trm"
    config_cls = TRMConfig
    default_dataset: ClassVar[str] = "cremad"
    paper: ClassVar[str] = "Affective-TRM (Tiny Recursive Model), CREMA-D valence/arousal"
    metric_name: ClassVar[str] = "ccc_mean"
    metric_mode: ClassVar[str] = "max"
    plot_metrics: ClassVar[tuple[str, ...]] = ("ccc_v", "ccc_a", "frame_ccc_mean")
    config: TRMConfig

    def recipe(self) -> Recipe:
        c = self.config
        return Recipe(features=[s for s in (c.audio, c.video, c.text) if s], labels=[c.labels])

    def build_data(self, store: Any) -> TRMData:
        c = self.config
        if not c.video:
            raise _user_error("trm: video= is empty; the video stream is the clock, name one")
        if c.ccc_formula not in CCC_FORMULAS:
            raise _user_error(f"ccc_formula={c.ccc_formula!r}: use {' or '.join(CCC_FORMULAS)}")
        if c.hidden % c.heads:
            raise _user_error(f"hidden={c.hidden} is not divisible by heads={c.heads}")
        data = TRMData(store=store, config=c)
        data.clips(TRAIN_SPLIT)
        data.clips(c.val_split)
        return data

    def build_model(self, data: TRMData) -> nn.Module:
        return TinyRecursiveModel(data.dim, self.config)

    def train_batches(self, data: TRMData, epoch: int, rng: np.random.Generator) -> ClipBatches:
        clips = data.clips(TRAIN_SPLIT)
        return ClipBatches(clips, rng.permutation(len(clips)), self.config.batch_size,
                           self.config.max_frames)

    def _forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """(outputs [B, T', 2], their targets [B, T', 2], mask [B, T'], last outputs [B, 2])."""
        x, mask, lengths = batch["x"], batch["mask"], batch["lengths"]
        y = batch["y"]
        if self.config.per_frame:
            out = model(x, carry_state=True)
            last = out[torch.arange(len(x), device=x.device), lengths - 1]
            return out, y[:, None, :].expand_as(out), mask, last
        # The original: a fresh state per frame and only the last frame supervised, so only the
        # last frame needs computing.
        final = x[torch.arange(len(x), device=x.device), lengths - 1][:, None, :]
        out = model(final, carry_state=False)
        return out, y[:, None, :], torch.ones(out.shape[:2], dtype=torch.bool,
                                               device=x.device), out[:, 0]

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        out, target, mask, _ = self._forward(model, batch)
        return trm_loss(out, target, mask, self.config.mse_weight, self.config.ccc_formula)

    def predict(self, model: nn.Module, data: TRMData, split: str) -> dict[str, np.ndarray]:
        """Per clip: [T, 2] per-frame outputs (per_frame) or [1, 2] (the original mode); the
        clip's prediction is the last row."""
        clips = data.clips(split)
        device = next(model.parameters()).device
        order = np.argsort(-clips.lengths, kind="stable")  # similar lengths: little padding
        out: dict[str, np.ndarray] = {}
        for batch in ClipBatches(clips, order, self.config.batch_size, self.config.max_frames):
            batch = self.to_device(batch, device)
            frames, _, mask, _ = self._forward(model, batch)
            frames = frames.float().cpu().numpy()
            mask = mask.cpu().numpy()
            for b, clip in enumerate(batch["clips"]):
                out[clips.clip_ids[clip]] = frames[b][mask[b]]
        return out

    def score(self, predictions: dict[str, np.ndarray], data: TRMData,
              split: str) -> dict[str, float]:
        clips = data.clips(split)
        if np.isnan(clips.targets).any():
            raise _user_error(f"trm: split {split!r} has clips without a valence/arousal label")
        missing = [c for c in clips.clip_ids if c not in predictions]
        if missing:
            raise _user_error(f"no prediction for clip {missing[0]!r} of split {split!r}")
        last = np.stack([np.asarray(predictions[c])[-1] for c in clips.clip_ids])
        frames = np.concatenate([np.asarray(predictions[c]) for c in clips.clip_ids])
        frame_targets = np.repeat(clips.targets, [len(predictions[c]) for c in clips.clip_ids],
                                  axis=0)
        metrics = {"clips": float(len(clips))}
        for prefix, p, t in (("", last, clips.targets), ("frame_", frames, frame_targets)):
            ccc_v, ccc_a = ccc(p[:, 0], t[:, 0]), ccc(p[:, 1], t[:, 1])
            metrics[f"{prefix}ccc_v"] = ccc_v
            metrics[f"{prefix}ccc_a"] = ccc_a
            metrics[f"{prefix}ccc_mean"] = (ccc_v + ccc_a) / 2
        metrics["mse"] = float(np.mean((last - clips.targets) ** 2))
        metrics["loss"] = self.split_loss(predictions, clips)
        return metrics

    def split_loss(self, predictions: dict[str, np.ndarray], clips: AlignedClips) -> float:
        """The training loss on a split as the public code's validation loop takes it (what its
        ReduceLROnPlateau steps on): the clips in their order, `batch_size` at a time, the mean
        of the batches' losses. The outputs are the predictions, so nothing runs again."""
        losses = []
        for start in range(0, len(clips), self.config.batch_size):
            ids = clips.clip_ids[start: start + self.config.batch_size]
            outputs = [np.asarray(predictions[c], np.float32) for c in ids]
            targets = np.repeat(clips.targets[start: start + len(ids)],
                                [len(o) for o in outputs], axis=0)
            pred = torch.from_numpy(np.concatenate(outputs))
            losses.append(float(trm_loss(pred, torch.from_numpy(targets),
                                         torch.ones(len(pred), dtype=torch.bool),
                                         self.config.mse_weight, self.config.ccc_formula)))
        return float(np.mean(losses))

    def export(self, predictions: dict[str, np.ndarray], data: TRMData, split: str,
               out_dir: Path) -> list[Path]:
        """One CSV: clip_id, predicted valence and arousal (the last frame's), and the target."""
        clips = data.clips(split)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = safe_join(out_dir, split, suffix="_va.csv")  # --split is the user's text
        lines = ["clip_id,valence,arousal,target_valence,target_arousal"]
        for clip_id, target in zip(clips.clip_ids, clips.targets):
            v, a = np.asarray(predictions[clip_id])[-1]
            known = ",".join("" if np.isnan(t) else f"{t:.6f}" for t in target)  # unlabelled
            lines.append(f"{clip_id},{v:.6f},{a:.6f},{known}")
        path.write_text("\n".join(lines) + "\n")
        return [path]

    def predict_data(self, trained: TRMData, store: Any, split: str) -> TRMData:
        """The clips of `split` in `store`, labelled or not (nothing is learned from data)."""
        return TRMData(store=store, config=self.config, labelled_only=False)

    def prediction_tables(self, predictions: dict[str, np.ndarray], data: TRMData, split: str
                          ) -> dict[str, PredictionTable]:
        """Valence and arousal per frame of the video clock (the clip's is the last row)."""
        return series_tables(predictions, ("valence", "arousal"), data.clips(split).frame_shift_s)
