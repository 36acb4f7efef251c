"""The transformer-LSTM family as heads: data from the store, chunked batches, CCC loss/metric.

Batching: `batch_size` slots run videos in parallel; each slot walks its video chunk by chunk
(`chunk` frames), and every batch is one optimiser step; a slot's state is reset when a video
starts in it, so it never crosses from one video into another. `batching="groups"` (the released
code) takes `batch_size` videos at a time and runs the chunks of the longest before the next
group starts; `"slots"` (ours) gives a slot the next video of the (shuffled) order as soon as its
own ends, so no step is spent on a finished video. A batch is as wide as its longest remaining
chunk, as the released code slices its padded batch: without the key-padding mask, what the
encoder attends to past a video's end is then the same padding as there.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from heads.base import Head, Recipe
from heads.data import FrameSequences, feature_stats, load_frame_sequences, split_clip_ids
from heads.metrics import ccc, ccc_loss
from heads.prediction_table import PredictionTable, series_tables
from heads.registry import register_head
from heads.transformer_family.config import (
    FCLSTMXLConfig,
    TransformerAttentionConfig,
    TransformerConfig,
    TransformerFamilyConfig,
    TransformerLSTMConfig,
)
from heads.transformer_family.export import ensemble_mean, write_challenge_files
from heads.transformer_family.models import MODELS, init_released, sub_network_parameters
from heads.transformer_family.official import import_released, read_released
from heads.transformer_family.smoothing import smooth_va

TRAIN_SPLIT = "train"
TARGETS = ("valence", "arousal")  # prediction columns, in order
TARGET_METRICS = ("ccc_v", "ccc_a")  # the raw CCC each target's best epoch is chosen by


class PostProcessed(dict):
    """Predictions already smoothed and clipped (an ensemble of post-processed runs): export
    writes them as they are and score does not smooth them again."""


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


@dataclass
class FamilyData:
    """Per-split frame sequences (loaded on first use) and the train normalisation stats."""

    store: Any
    config: TransformerFamilyConfig
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    splits: dict[str, FrameSequences] = field(default_factory=dict)

    def sequences(self, split: str) -> FrameSequences:
        if split not in self.splits:
            streams = [*self.config.features]
            clip_ids = split_clip_ids(self.store, split, streams)
            if not clip_ids:
                raise _user_error(f"{self.store.url}: no clip of split {split!r} has every "
                                  f"feature stream ({', '.join(streams)})")
            seqs = load_frame_sequences(
                self.store, clip_ids, self.config.features, self.config.labels,
                invalid_value=self.config.invalid_value,
            )
            if self.mean is not None and self.std is not None:
                seqs.normalize(self.mean, self.std)
            self.splits[split] = seqs
        return self.splits[split]

    @property
    def dim(self) -> int:
        return self.sequences(TRAIN_SPLIT).dim


def plan_chunks(lengths: np.ndarray, order: np.ndarray, n_slots: int,
                chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Assign videos to `n_slots` parallel slots and cut them into chunks.

    Returns (clip [S, B], start [S, B]): at step s slot b processes frames
    `start[s, b] : start[s, b] + chunk` of clip `clip[s, b]` (-1: the slot is empty). A slot
    takes the next video in `order` as soon as its current one is done.
    """
    if chunk <= 0 or n_slots <= 0:
        raise _user_error(f"chunk={chunk}, batch_size={n_slots}: both must be positive")
    queue = [int(i) for i in order if lengths[i] > 0]
    queue.reverse()
    current = np.full(n_slots, -1, np.int64)
    position = np.zeros(n_slots, np.int64)
    for b in range(n_slots):
        if queue:
            current[b] = queue.pop()
    clips, starts = [], []
    while (current >= 0).any():
        clips.append(current.copy())
        starts.append(position.copy())
        for b in range(n_slots):
            if current[b] < 0:
                continue
            position[b] += chunk
            if position[b] >= lengths[current[b]]:
                current[b] = queue.pop() if queue else -1
                position[b] = 0
    if not clips:
        return np.zeros((0, n_slots), np.int64), np.zeros((0, n_slots), np.int64)
    return np.stack(clips), np.stack(starts)


def plan_groups(lengths: np.ndarray, order: np.ndarray, n_slots: int,
                chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The released batching: videos in `order` taken `n_slots` at a time, each group cut into
    the chunks of its longest video before the next group starts (same layout as
    `plan_chunks`; a slot whose video has ended is empty, -1, for the rest of its group)."""
    if chunk <= 0 or n_slots <= 0:
        raise _user_error(f"chunk={chunk}, batch_size={n_slots}: both must be positive")
    videos = np.asarray([int(i) for i in order if lengths[i] > 0], np.int64)
    clips, starts = [], []
    for first in range(0, len(videos), n_slots):
        group = videos[first : first + n_slots]
        group_lengths = np.asarray(lengths)[group]
        for start in range(0, int(group_lengths.max()), chunk):
            clip = np.full(n_slots, -1, np.int64)
            running = group_lengths > start
            clip[: len(group)] = np.where(running, group, -1)
            clips.append(clip)
            starts.append(np.where(clip >= 0, start, 0).astype(np.int64))
    if not clips:
        return np.zeros((0, n_slots), np.int64), np.zeros((0, n_slots), np.int64)
    return np.stack(clips), np.stack(starts)


PLANS = {"groups": plan_groups, "slots": plan_chunks}


class ChunkBatches:
    """Iterable of chunk batches for one pass over a split (len() = number of steps)."""

    def __init__(self, seqs: FrameSequences, clips: np.ndarray, starts: np.ndarray,
                 chunk: int) -> None:
        self.seqs, self.clips, self.starts, self.chunk = seqs, clips, starts, chunk

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self):
        seqs, chunk = self.seqs, self.chunk
        for clip, start in zip(self.clips, self.starts):
            active = clip >= 0
            safe = np.where(active, clip, 0)
            length = np.where(active, seqs.lengths[safe], 0)
            # as wide as the longest remaining chunk (the released code slices its batch, padded
            # to the longest video, so a batch never runs past every video's end)
            width = int(np.clip(length - start, 0, chunk).max()) if active.any() else chunk
            t = start[:, None] + np.arange(max(width, 1))[None, :]
            present = t < length[:, None]
            rows = seqs.offsets[safe][:, None] + np.minimum(t, np.maximum(length - 1, 0)[:, None])
            rows = np.where(present, rows, 0)
            x = seqs.features[rows]
            x[~present] = 0.0
            y = seqs.labels[rows]
            mask = present & seqs.mask[rows]
            yield {
                "x": torch.from_numpy(x),
                "y": torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)),
                "mask": torch.from_numpy(mask),
                "present": torch.from_numpy(present),
                "reset": torch.from_numpy(active & (start == 0)),
                "clip": clip,
                "start": start,
            }


def masked_ccc_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valence and arousal of 1 - CCC over the valid frames of the batch (computed in
    float32 under autocast). A batch without valid frames gives a constant loss, zero gradient."""
    return ccc_loss(pred.float(), target.float(), mask)


class TransformerFamilyHead(Head):
    """Shared code of the family; the registered subclasses pick the model and defaults."""

    default_dataset: ClassVar[str] = "affwild2"
    paper: ClassVar[str] = "Meng et al., ABAW 2022 valence/arousal"
    metric_name: ClassVar[str] = "ccc_mean"
    metric_mode: ClassVar[str] = "max"
    plot_metrics: ClassVar[tuple[str, ...]] = ("ccc_v", "ccc_a", "ccc_mean_smoothed")
    config: TransformerFamilyConfig

    def __init__(self, config: TransformerFamilyConfig | None = None) -> None:
        super().__init__(config)
        self._state: Any = None
        # per target: (epoch, ccc) of its best validation so far (training; kept on resume)
        self._best_targets: dict[str, tuple[int, float]] = {}
        # per target: the state dict predict uses for that column (set when a run is loaded)
        self._target_states: dict[str, dict[str, torch.Tensor]] = {}
        # per target: (checkpoint file name, epoch) of the state above
        self._target_sources: dict[str, tuple[str, int]] = {}

    def recipe(self) -> Recipe:
        return Recipe(features=list(self.config.features), labels=[self.config.labels])

    def build_data(self, store: Any) -> FamilyData:
        data = FamilyData(store=store, config=self.config)
        train = data.sequences(TRAIN_SPLIT)
        if not train.mask.any():
            raise _user_error(f"{store.url}: split {TRAIN_SPLIT!r} has no valid "
                              f"{self.config.labels} frames")
        if self.config.normalize:
            data.mean, data.std = feature_stats(train)
            train.normalize(data.mean, data.std)
        data.sequences(self.config.val_split)
        return data

    def build_model(self, data: FamilyData) -> nn.Module:
        model = MODELS[self.name](data.dim, self.config)
        return init_released(model) if self.config.init == "normal" else model

    def clip_groups(self, model: nn.Module) -> list[list[nn.Parameter]]:
        """The released sub-networks, each clipped on its own (`clip_per_subnetwork`)."""
        if self.config.clip_per_subnetwork:
            return sub_network_parameters(model)
        return super().clip_groups(model)

    def plan(self, lengths: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chunk plan of `batching` for videos of `lengths` taken in `order`."""
        return PLANS[self.config.batching](lengths, order, self.config.batch_size,
                                           self.config.chunk)

    # training -------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, data: Any) -> None:
        self._state = None  # a new epoch starts every slot with a new video

    def train_batches(self, data: FamilyData, epoch: int, rng: np.random.Generator) -> ChunkBatches:
        seqs = data.sequences(TRAIN_SPLIT)
        clips, starts = self.plan(seqs.lengths, rng.permutation(len(seqs)))
        return ChunkBatches(seqs, clips, starts, self.config.chunk)

    def _forward(self, model: nn.Module, batch: dict[str, Any], state: Any) -> tuple[Any, Any]:
        if state is None:
            state = model.initial_state(batch["x"].shape[0], batch["x"].device)
        state = model.reset_state(state, batch["reset"])
        out, state = model(batch["x"], batch["present"], state)
        return out, model.detach_state(state)

    def training_step(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        out, self._state = self._forward(model, batch, self._state)
        return masked_ccc_loss(out, batch["y"], batch["mask"])

    # evaluation -----------------------------------------------------------------------------
    def predict(self, model: nn.Module, data: FamilyData, split: str) -> dict[str, np.ndarray]:
        """Raw per-frame [T, 2] predictions per clip (smoothing is applied at export).

        A loaded run with per-target checkpoints predicts valence with the weights of valence's
        best epoch and arousal with arousal's, as the official test.py does; `model` gets its
        own weights back afterwards.
        """
        if not self._target_states:
            return self._predict_raw(model, data, split)
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        columns = {}
        try:
            for col, weights in enumerate(self.column_weights(own)):
                model.load_state_dict(weights)
                out = self._predict_raw(model, data, split)
                columns[col] = out
        finally:
            model.load_state_dict(own)
        return {clip: np.stack([columns[0][clip][:, 0], columns[1][clip][:, 1]], axis=1)
                for clip in columns[0]}

    def column_weights(self, own: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """The weights each prediction column (valence, arousal) is predicted with: its target's
        own best checkpoint when the loaded run has one, else `own` (the model's weights)."""
        return [self._target_states.get(target, own) for target in TARGETS]

    def _predict_raw(self, model: nn.Module, data: FamilyData,
                     split: str) -> dict[str, np.ndarray]:
        seqs = data.sequences(split)
        device = next(model.parameters()).device
        if self.config.batching == "groups":  # test.py: serial batches, in the clips' order
            order = np.arange(len(seqs))
        else:  # long videos first: fewer idle slots
            order = np.argsort(-seqs.lengths, kind="stable")
        clips, starts = self.plan(seqs.lengths, order)
        outputs = [np.zeros((int(n), 2), np.float32) for n in seqs.lengths]
        state = None
        for batch in ChunkBatches(seqs, clips, starts, self.config.chunk):
            batch = self.to_device(batch, device)
            with torch.no_grad():
                out, state = self._forward(model, batch, state)
            out = out.float().cpu().numpy()
            for b, (clip, start) in enumerate(zip(batch["clip"], batch["start"])):
                if clip < 0:
                    continue
                n = min(self.config.chunk, int(seqs.lengths[clip]) - int(start))
                outputs[clip][start : start + n] = out[b, :n]
        return dict(zip(seqs.clip_ids, outputs))

    def score(self, predictions: dict[str, np.ndarray], data: FamilyData,
              split: str) -> dict[str, float]:
        """CCC of valence and arousal over all valid frames of the split concatenated (raw and
        after the smoothing post-process)."""
        seqs = data.sequences(split)
        if not seqs.mask.any():
            raise _user_error(f"split {split!r} has no valid {self.config.labels} labels to score")
        preds, smoothed, labels, masks = [], [], [], []
        for i, clip_id in enumerate(seqs.clip_ids):
            if clip_id not in predictions:
                raise _user_error(f"no prediction for clip {clip_id!r} of split {split!r}")
            pred = np.asarray(predictions[clip_id], np.float32)
            part = seqs.clip_slice(i)
            preds.append(pred)
            smoothed.append(self.postprocess(pred))
            labels.append(seqs.labels[part])
            masks.append(seqs.mask[part])
        mask = np.concatenate(masks)
        y = np.concatenate(labels)[mask]
        metrics: dict[str, float] = {"frames": float(mask.sum())}
        # already post-processed (an ensemble): scored as given, not smoothed a second time
        kinds = [("", preds)] if isinstance(predictions, PostProcessed) else [
            ("", preds), ("_smoothed", smoothed)]
        for suffix, series in kinds:
            p = np.concatenate(series)[mask]
            ccc_v, ccc_a = float(ccc(p[:, 0], y[:, 0])), float(ccc(p[:, 1], y[:, 1]))
            metrics[f"ccc_v{suffix}"] = ccc_v
            metrics[f"ccc_a{suffix}"] = ccc_a
            metrics[f"ccc_mean{suffix}"] = (ccc_v + ccc_a) / 2
        return metrics

    def postprocess(self, pred: np.ndarray) -> np.ndarray:
        """Smooth then clip to [-1, 1] (the official order; `postprocess` selects ours); only
        clip when `smooth` is off."""
        if not self.config.smooth:
            return np.clip(np.asarray(pred, np.float32), -1.0, 1.0)
        return smooth_va(pred, self.config.smooth_half_widths, self.config.postprocess)

    def export(self, predictions: dict[str, np.ndarray], data: Any, split: str,
               out_dir: Path) -> list[Path]:
        """One challenge-format txt per video, post-processed (unless it already is)."""
        if not isinstance(predictions, PostProcessed):
            predictions = {k: self.postprocess(v) for k, v in predictions.items()}
        return write_challenge_files(predictions, Path(out_dir))

    def predict_data(self, trained: FamilyData, store: Any, split: str) -> FamilyData:
        """Splits load from `store` on first use, normalised with the run's train statistics."""
        return dataclasses.replace(trained, store=store, splits={})

    def prediction_tables(self, predictions: dict[str, np.ndarray], data: FamilyData,
                          split: str) -> dict[str, PredictionTable]:
        """Raw per-frame valence and arousal on the label timeline (the export smooths them)."""
        return series_tables(predictions, TARGETS, data.sequences(split).frame_shift_s)

    def ensemble(self, predictions: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Official (`ensemble_of="postprocessed"`): the mean of each run's smoothed and clipped
        outputs (get_preds.py averages the runs' `*_smooth.json`). `raw`: the mean of the raw
        outputs, post-processed once at export."""
        if self.config.ensemble_of == "raw":
            return ensemble_mean(predictions)
        runs = [{k: self.postprocess(v) for k, v in run.items()} for run in predictions]
        return PostProcessed(ensemble_mean(runs))

    # released checkpoints ---------------------------------------------------------------------
    def read_official(self, path: Path) -> dict[str, torch.Tensor]:
        """A released `<epoch>_net<name>.pth` with its sibling sub-network files, or one file
        holding them all (heads/transformer_family/official.py)."""
        return read_released(self.name, path)

    def import_official(self, official: Any, model: nn.Module) -> None:
        import_released(self.name, official, model, self.config.regressor_dropout)

    # per-target checkpoints -----------------------------------------------------------------
    @staticmethod
    def target_checkpoint(checkpoints: Path, target: str) -> Path:
        return Path(checkpoints) / f"best-{target}.pt"

    def on_evaluated(self, model: nn.Module, metrics: dict[str, Any], checkpoints: Path,
                     epoch: int) -> None:
        """Keep the best epoch of each target by its own raw validation CCC (strictly better,
        as the official train.py), in checkpoints/best-<target>.pt."""
        if not self.config.per_target_checkpoints:
            return
        for target, key in zip(TARGETS, TARGET_METRICS):
            value = float(metrics[key])
            best = self._best_targets.get(target)
            if best is not None and not value > best[1]:
                continue
            self._best_targets[target] = (epoch, value)
            path = self.target_checkpoint(checkpoints, target)
            tmp = path.with_name(path.name + ".tmp")
            torch.save({"model": model.state_dict(), "epoch": epoch, key: value}, tmp)
            os.replace(tmp, path)
        summary = {t: {"epoch": e, "ccc": c} for t, (e, c) in self._best_targets.items()}
        (Path(checkpoints) / "best-targets.json").write_text(json.dumps(summary, indent=1) + "\n")

    def on_loaded(self, model: nn.Module, checkpoints: Path, checkpoint: str) -> None:
        """Opening a run's best weights: each target's own best checkpoint, if the run has one
        (older runs and per_target_checkpoints=false fall back to best.pt for both)."""
        self._target_states = {}
        self._target_sources = {}
        if checkpoint != "best" or not self.config.per_target_checkpoints:
            return
        device = next(model.parameters()).device
        for target in TARGETS:
            path = self.target_checkpoint(checkpoints, target)
            if path.exists():
                state = torch.load(path, map_location=device, weights_only=True)
                self._target_states[target] = state["model"]
                self._target_sources[target] = (path.name, int(state["epoch"]))

    def checkpoints_used(self) -> dict[str, dict[str, Any]]:
        """valence and arousal: each target's own best checkpoint and its epoch."""
        return {target: {"checkpoint": name, "epoch": epoch}
                for target, (name, epoch) in self._target_sources.items()}

    def extra_state(self) -> dict[str, Any]:
        return {"best_targets": {t: list(v) for t, v in self._best_targets.items()}}

    def load_extra_state(self, state: Any) -> None:
        saved = state.get("best_targets", {})
        self._best_targets = {t: (int(v[0]), float(v[1])) for t, v in saved.items()}


@register_head
class TransformerHead(TransformerFamilyHead):
    """Transformer encoder over 250-frame chunks (no state across chunks)."""

    name = "transformer"
    config_cls = TransformerConfig


@register_head
class TransformerLSTMHead(TransformerFamilyHead):
    """Transformer encoder + LSTM whose state is carried across the chunks of a video."""

    name = "transformer-lstm"
    config_cls = TransformerLSTMConfig


@register_head
class TransformerAttentionHead(TransformerFamilyHead):
    """Transformer encoder + attention over a memory of the video's earlier chunks."""

    name = "transformer-attention"
    config_cls = TransformerAttentionConfig


@register_head
class FCLSTMXLHead(TransformerFamilyHead):
    """FC + LSTM(512) carried across 100-frame chunks."""

    name = "fclstm-xl"
    config_cls = FCLSTMXLConfig
