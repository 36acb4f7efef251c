"""Affective-TRM as a head: CREMA-D valence/arousal from Dasheng + HSEmotion + EmbeddingGemma.

Inputs: the audio (Dasheng-base, 768-d), video (HSEmotion EfficientNet-B0, 1280-d) and text
(EmbeddingGemma, 768-d, one per utterance) streams aligned on the video stream's timeline and
concatenated -> [T, 2816]. Target: the clip's circumplex valence/arousal (`cremad-va`, written
at ingest); the split is the store's (speaker independent, as ingested).

The defaults are the released code (the `paper` profile); `--set profile=fixed` applies our
corrections at once (`TRMConfig.FIXED`; the README's paper-fidelity section has the table):
- Input rows (`sampling`): released, `max_frames` (30) video rows spread over the whole clip
  paired by index with the audio's first rows; fixed, every stream on the video clock by time,
  the whole clip (`max_frames=0`).
- Time (`per_frame`): released, the state is reset at every frame (halt_max_steps=1), so only
  the last step's input reaches the supervised output; fixed, the state is carried from frame
  to frame and every frame is supervised.
- The supervised step (`last_step`): released, the batch's last padded step (a clip shorter
  than the longest of its batch is predicted from zero input); fixed, each clip's last frame.
- Halting exploration (`halt_exploration`, released 0.05): in training, a step that is not
  halted goes on from its carried state on the same, earlier frame (drawn per batch from the
  epoch's generator); fixed, 0.
- Loss (`ccc_formula`): released, an extra sigma_x * sigma_y factor in the CCC's numerator and
  the MSE for a batch of one clip; fixed, Lin's CCC.
- The input LayerNorm (`input_norm_trainable`): released, built outside the optimiser, so it
  stays at its initial identity; fixed, trained.
- The kept weights (`keep_checkpoint`): released, the final epoch; fixed, the best validation
  CCC.

Metrics: CCC_V, CCC_A and their mean over the clips of a split, each clip predicted by its last
output; `frame_ccc_*` score every frame against the clip's target (per_frame); `val_ccc` is the
released code's "Val CCC" on the split: 1 - the mean over its batches (clips in order,
`batch_size` at a time) of the released formula's CCC loss.
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
from heads.trm.data import AlignedClips, load_aligned_clips, load_released_clips
from heads.trm.model import TinyRecursiveModel

TRAIN_SPLIT = "train"
RELEASED_FRAMES = 30  # the released Config.NUM_FRAMES, used when max_frames=0


def face_cropped(info: Any) -> bool:
    """Whether a video stream was encoded from the released code's MTCNN face crops (the
    encoder option extract/encoders/hsemotion.py records in the stream's provenance)."""
    encoder = (info.preprocessing or {}).get("encoder") or {}
    return (encoder.get("options") or {}).get("face_crop") == "mtcnn"


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


def original_ccc_part(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The released loss's CCC part of a batch [N, 2]: the mean of both channels' 1 - CCC in
    its formula, or the MSE when the batch has fewer than two clips."""
    if len(pred) < 2:
        return ((pred - target) ** 2).mean()
    return (original_ccc_loss(pred[:, 0], target[:, 0])
            + original_ccc_loss(pred[:, 1], target[:, 1])) / 2


def trm_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
             mse_weight: float, formula: str = "standard") -> torch.Tensor:
    """(1 - CCC_V + 1 - CCC_A) / 2 + mse_weight * MSE over the valid frames; pred and target
    [..., 2], mask pred.shape[:-1]. Computed in float32."""
    pred, target = pred.float(), target.float()
    if formula == "standard":
        ccc_part = ccc_loss(pred, target, mask)
    else:
        ccc_part = original_ccc_part(pred[mask], target[mask])
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
            c = self.config
            if c.sampling == "released":
                self.splits[split] = load_released_clips(
                    self.store, split, self.streams, c.video, c.labels,
                    c.max_frames or RELEASED_FRAMES, require_labels=self.labelled_only)
            else:
                self.splits[split] = load_aligned_clips(self.store, split, self.streams,
                                                        c.video, c.labels,
                                                        require_labels=self.labelled_only)
        return self.splits[split]

    @property
    def dim(self) -> int:
        return self.clips(TRAIN_SPLIT).dim


class ClipBatches:
    """The batches of one pass over a split in a given order (len() = number of batches).

    With `halt_rng`, each batch also carries "halt_repeats" [B]: how many times in a row each
    clip's released training draw left it not halted before its supervised step (a geometric
    count with success probability `halt_exploration`, drawn here from the epoch's generator
    so a resumed run draws the same)."""

    def __init__(self, clips: AlignedClips, order: np.ndarray, batch_size: int,
                 max_frames: int, halt_rng: np.random.Generator | None = None,
                 halt_exploration: float = 0.0) -> None:
        self.clips, self.order = clips, order
        self.batch_size, self.max_frames = batch_size, max_frames
        self.halt_rng, self.halt_exploration = halt_rng, halt_exploration

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.order), self.batch_size):
            batch = self.clips.batch(self.order[start : start + self.batch_size],
                                     self.max_frames)
            if self.halt_rng is not None and self.halt_exploration > 0:
                size = len(batch["lengths"])
                batch["halt_repeats"] = torch.from_numpy(
                    self.halt_rng.geometric(1.0 - self.halt_exploration, size) - 1)
            yield batch


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
        if c.per_frame and c.last_step == "batch":
            raise _user_error("last_step=batch is the released per-frame-reset mode's; with "
                              "per_frame=true set last_step=clip")
        if c.hidden % c.heads:
            raise _user_error(f"hidden={c.hidden} is not divisible by heads={c.heads}")
        data = TRMData(store=store, config=c)
        data.clips(TRAIN_SPLIT)
        data.clips(c.val_split)
        return data

    def build_model(self, data: TRMData) -> nn.Module:
        return TinyRecursiveModel(data.dim, self.config)

    def approximations(self, data: TRMData) -> list[str]:
        """What the released code did on the media that the cached streams only approximate."""
        c = self.config
        out = []
        video = data.store.resolve(c.video)
        if c.sampling == "released":
            out.append(f"{c.max_frames or RELEASED_FRAMES} video rows spread over the cached "
                       f"{1 / video.frame_shift_s:g} fps stream, not over the file's own frames")
        if c.profile == "paper" and not data.clips(c.val_split).in_released_order:
            out.append("validation batches in clip-id order: the store's clip table has no "
                       "actor_rank (re-ingest CREMA-D for the released actor order)")
        if c.profile == "paper" and not face_cropped(video):
            out.append(f"video stream {c.video!r} encodes whole frames, not the released "
                       "code's MTCNN face crops (extract it with the face_crop=mtcnn option)")
        return out

    def import_official(self, official: Any, model: nn.Module) -> None:
        """The released `emotion_model_sequential_av.pth` (TinyRecursiveReasoningModel_ACTV1's
        state dict, keys under "inner.") onto our model."""
        official.copy("input_proj.weight", "inner.input_proj.weight")
        official.copy("output_head.weight", "inner.output_head.weight")
        official.copy("shortcut.weight", "inner.shortcut_head.weight")
        official.copy("shortcut.bias", "inner.shortcut_head.bias")
        official.copy("z_h_init", "inner.H_init")
        official.copy("z_l_init", "inner.L_init")
        for i in range(self.config.layers):
            theirs, ours = f"inner.L_level.layers.{i}.", f"blocks.{i}."
            official.copy(ours + "attention.qkv.weight", theirs + "self_attn.qkv_proj.weight")
            official.copy(ours + "attention.out.weight", theirs + "self_attn.o_proj.weight")
            official.copy(ours + "mlp.gate_up.weight", theirs + "mlp.gate_up_proj.weight")
            official.copy(ours + "mlp.down.weight", theirs + "mlp.down_proj.weight")
        official.ignore("inner.q_head.", "the halting head: with halt_max_steps=1 every step "
                        "halts whatever it says, and no loss trains it")
        official.keep_ours("input_norm.", "the released input LayerNorm lives in the training "
                           "loop, outside the saved model, and is never trained: identity")

    def train_batches(self, data: TRMData, epoch: int, rng: np.random.Generator) -> ClipBatches:
        c = self.config
        clips = data.clips(TRAIN_SPLIT)
        order = rng.permutation(len(clips))
        halting = rng if not c.per_frame and c.halt_exploration > 0 else None
        return ClipBatches(clips, order, c.batch_size, c.max_frames, halting,
                           c.halt_exploration)

    def _forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """(outputs [B, T', 2], their targets [B, T', 2], mask [B, T'], last outputs [B, 2])."""
        x, mask, lengths = batch["x"], batch["mask"], batch["lengths"]
        y = batch["y"]
        if self.config.per_frame:
            out = model(x, carry_state=True)
            last = out[torch.arange(len(x), device=x.device), lengths - 1]
            return out, y[:, None, :].expand_as(out), mask, last
        # The released mode: a fresh state per frame and only the last step supervised, so only
        # that step needs computing: the batch's last padded step (zeros for a shorter clip) or
        # each clip's own last frame.
        if self.config.last_step == "batch":
            final = torch.full_like(lengths, x.shape[1] - 1)
        else:
            final = lengths - 1
        steps = None
        if "halt_repeats" in batch:
            # a run of k steps left unhalted before the last: the last step goes on from the
            # state of step T-1-k, on that step's frame, for k + 1 recursions in all
            repeats = torch.minimum(batch["halt_repeats"].to(final), final)
            final, steps = final - repeats, repeats + 1
        frame = x[torch.arange(len(x), device=x.device), final]
        out = model.last_frame(frame, steps)[:, None, :]
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
        if self.config.last_step == "batch" and not self.config.per_frame:
            order = np.arange(len(clips))  # the released loader's batches: outputs depend on them
        else:
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
        metrics["val_ccc"] = self.released_val_ccc(last, clips.targets)
        return metrics

    def released_val_ccc(self, last: np.ndarray, targets: np.ndarray) -> float:
        """The released code's "Val CCC": 1 - the mean over the split's batches (clips in
        order, `batch_size` at a time) of its loss's CCC part (released formula, MSE for a
        batch of one clip), whatever `ccc_formula` trains with."""
        size = self.config.batch_size
        parts = [float(original_ccc_part(torch.from_numpy(last[i:i + size]).float(),
                                         torch.from_numpy(targets[i:i + size]).float()))
                 for i in range(0, len(last), size)]
        return 1.0 - float(np.mean(parts))

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
