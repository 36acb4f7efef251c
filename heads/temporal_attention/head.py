"""RAPT-CLIP (RAER classroom emotions) as a head of the shared trainer.

Reads only the store: the per-frame CLIP ViT-B/16 embeddings of the face crops and of the body
crops (`clip-vit-b16@face`, `clip-vit-b16@body`, 512-d, projected) and the class label
(`raer-class`). Each clip is cut into 16 segments (TSN sampling, duration 1): in training one
random frame per segment, in evaluation the centre frame of each; frames are gathered from the
in-memory stream arrays, nothing is decoded.

The image encoder is frozen because its features are cached: the paper fine-tunes it at
lr 1e-6, which a cache cannot do. Everything after it is trained as in the paper: the face
adapter, the two temporal modules, the fusion layer and the CoOp contexts of the prompts of
the frozen CLIP text tower, which is built from the same weights as the cached image stream
(its provenance says which; random weights give the same random tower, reduced if the image
stream was reduced).

Differences from the RAPT-CLIP code, and why:
- mixup mixes the cached embeddings of the 16 segments (one permutation and one lambda for
  face and body) instead of the decoded images: the images are not there, the encoder frozen;
- the MI targets (the frozen tower's features of the fixed class descriptions) are computed
  once instead of at every step: same values, since nothing they depend on changes.
Loss: LDL + w * MI + w * DC, w = 0 before epoch 5 then linear to 0.1 over 10 epochs; mixup
alpha 0.2; class-balanced sampling with replacement; best checkpoint by validation UAR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from heads.base import Head, Recipe
from heads.class_predictions import mean_of_runs, write_csv
from heads.data import split_clip_ids
from heads.metrics import confusion_matrix, uar, war
from heads.prediction_table import PredictionTable, class_tables
from heads.registry import register_head
from heads.temporal_attention.config import TemporalAttentionConfig
from heads.temporal_attention.model import (
    TemporalAttentionClip,
    aux_weight,
    dc_loss,
    ldl_loss,
    mi_loss,
)
from heads.temporal_attention.prompts import prompts_for
from heads.temporal_attention.text import (
    ClipTextTower,
    build_clip,
    checkpoint_path,
    describe_source,
)


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


def segment_indices(n_frames: int, segments: int, rng: np.random.Generator | None = None
                    ) -> np.ndarray:
    """Frame index per segment: random inside each segment (`rng`), else the centre frame.

    Clips shorter than `segments` frames repeat their last frame (TSN's edge padding).
    """
    if n_frames < 1:
        raise ValueError("a clip without frames has no segments")
    if rng is None:
        if n_frames > segments:
            tick = n_frames / segments
            return (tick / 2.0 + tick * np.arange(segments)).astype(np.int64)
    else:
        span = n_frames // segments
        if span > 0:
            return np.arange(segments) * span + rng.integers(span, size=segments)
    return np.minimum(np.arange(segments), n_frames - 1).astype(np.int64)


@dataclass
class SegmentSplit:
    """One split's clips: labels and where each clip's frames are in the stream arrays."""

    name: str
    clip_ids: list[str]
    labels: np.ndarray  # [N] class ids (-1: unlabelled)
    face_rows: np.ndarray  # [N] first row of each clip in the face array
    body_rows: np.ndarray  # [N] first row of each clip in the body array
    n_frames: np.ndarray  # [N] frames usable in both streams

    def __len__(self) -> int:
        return len(self.clip_ids)


@dataclass
class SegmentData:
    face: np.ndarray  # [R, D] (float16 as stored; batches are converted)
    body: np.ndarray
    splits: dict[str, SegmentSplit]
    classes: list[str]
    dim: int
    source: dict[str, Any] = field(default_factory=dict)  # CLIP provenance of the face stream

    def split(self, name: str) -> SegmentSplit:
        if name not in self.splits:
            raise _user_error(f"temporal_attention: no clips of split {name!r} with face, body "
                              f"and label streams (splits: {', '.join(self.splits) or 'none'})")
        return self.splits[name]


class SegmentBatches:
    """One epoch: class-balanced draws with replacement, random segment frames, mixup draws."""

    def __init__(self, data: SegmentData, config: TemporalAttentionConfig,
                 rng: np.random.Generator) -> None:
        split = data.split("train")
        labelled = np.flatnonzero(split.labels >= 0)
        if len(labelled) == 0:
            raise _user_error("temporal_attention: the train split has no labelled clips")
        if config.balanced_sampler:
            counts = np.bincount(split.labels[labelled], minlength=len(data.classes))
            weights = 1.0 / counts[split.labels[labelled]]
            order = rng.choice(labelled, size=len(labelled), replace=True,
                               p=weights / weights.sum())
        else:
            order = rng.permutation(labelled)
        self.size = max(1, min(config.batch_size, len(order)))
        self.order = order[: len(order) // self.size * self.size]  # drop_last, as the paper
        self.data, self.split, self.config, self.rng = data, split, config, rng

    def __len__(self) -> int:
        return len(self.order) // self.size

    def __iter__(self):
        config, split = self.config, self.split
        for b in range(len(self)):
            clips = self.order[b * self.size: (b + 1) * self.size]
            frames = np.stack([segment_indices(int(split.n_frames[c]), config.segments, self.rng)
                               for c in clips])
            batch = gather(self.data, split, clips, frames)
            lam = float(self.rng.beta(config.mixup_alpha, config.mixup_alpha)) \
                if config.mixup_alpha > 0 else 1.0
            batch["mix_index"] = torch.from_numpy(self.rng.permutation(len(clips)))
            batch["mix_lambda"] = torch.tensor(lam, dtype=torch.float32)
            yield batch


def gather(data: SegmentData, split: SegmentSplit, clips: np.ndarray, frames: np.ndarray
           ) -> dict[str, torch.Tensor]:
    """Face and body features [B, S, D] of the chosen frames, and the labels [B]."""
    face = data.face[split.face_rows[clips][:, None] + frames].astype(np.float32)
    body = data.body[split.body_rows[clips][:, None] + frames].astype(np.float32)
    return {"face": torch.from_numpy(face), "body": torch.from_numpy(body),
            "label": torch.from_numpy(split.labels[clips].astype(np.int64))}


def load_segments(store: Any, ids: dict[str, list[str]], face_info: Any, body_info: Any,
                  label_info: Any) -> tuple[np.ndarray, np.ndarray, dict[str, SegmentSplit]]:
    """Face and body rows of every clip in `ids` (split -> clip ids) and each split's index into
    them; a clip without a label gets class -1."""
    all_ids = sorted({i for v in ids.values() for i in v})
    face = store.load_stream(face_info, all_ids)
    body = store.load_stream(body_info, all_ids)
    labelled = store.committed_clip_ids(label_info) & set(all_ids)
    label_array = store.load_stream(label_info, sorted(labelled)) if labelled else None
    splits = {}
    for split, clip_ids in ids.items():
        if not clip_ids:
            continue
        f_i = np.array([face.index_of(k) for k in clip_ids])
        b_i = np.array([body.index_of(k) for k in clip_ids])
        labels = np.array([int(np.asarray(label_array.clip(k)).reshape(-1)[0])
                           if k in labelled else -1 for k in clip_ids], dtype=np.int64)
        splits[split] = SegmentSplit(
            name=split, clip_ids=list(clip_ids), labels=labels,
            face_rows=face.offsets[f_i].astype(np.int64),
            body_rows=body.offsets[b_i].astype(np.int64),
            n_frames=np.minimum(face.lengths[f_i], body.lengths[b_i]).astype(np.int64))
    empty = [s.clip_ids[i] for s in splits.values() for i in np.flatnonzero(s.n_frames < 1)]
    if empty:
        raise _user_error(f"{store.url}: clip {empty[0]!r} has no frames in "
                          f"{face_info.alias} or {body_info.alias}")
    return face.data, body.data, splits


@register_head
class TemporalAttentionHead(Head):
    name: ClassVar[str] = "temporal_attention"
    config_cls: ClassVar[type] = TemporalAttentionConfig
    default_dataset: ClassVar[str] = "raer"
    paper: ClassVar[str] = "RAPT-CLIP, RAER classroom emotions"
    metric_name: ClassVar[str] = "UAR"
    metric_mode: ClassVar[str] = "max"
    plot_metrics: ClassVar[tuple[str, ...]] = ("WAR",)

    config: TemporalAttentionConfig

    def __init__(self, config: TemporalAttentionConfig | None = None) -> None:
        super().__init__(config)
        self._epoch = 0

    def recipe(self) -> Recipe:
        c = self.config
        return Recipe(features=[c.face_stream, c.body_stream], labels=[c.label_stream])

    # --- data -------------------------------------------------------------------------
    def build_data(self, store: Any) -> SegmentData:
        c = self.config
        face_info, body_info = store.resolve(c.face_stream), store.resolve(c.body_stream)
        label_info = store.resolve(c.label_stream)
        if face_info.dim != body_info.dim:
            raise _user_error(f"{store.url}: face stream {face_info.alias} is {face_info.dim}-d "
                              f"but body stream {body_info.alias} is {body_info.dim}-d")
        if "encoder" not in (face_info.preprocessing or {}) and not c.text_weights:
            raise _user_error(f"{store.url}: stream {face_info.alias} records no CLIP encoder "
                              "provenance; pass --set text_weights=PATH (its open_clip "
                              "checkpoint) so the text tower matches the image features")
        classes = list((label_info.extra or {}).get("classes") or [])
        if not classes:
            raise _user_error(f"{store.url}: label stream {label_info.alias} names no classes")
        streams = [face_info.key, body_info.key]
        present = {clip.get("split") for clip in store.clips()}
        ids = {s: split_clip_ids(store, s, streams) for s in ("train", c.val_split, "test")
               if s in present}
        all_ids = sorted({i for v in ids.values() for i in v})
        if not all_ids:
            raise _user_error(f"{store.url}: no clip has both {face_info.alias} and "
                              f"{body_info.alias}")
        face, body, splits = load_segments(store, ids, face_info, body_info, label_info)
        for needed in ("train", c.val_split):  # before training, not after its first epoch
            if needed not in splits:
                raise _user_error(f"{store.url}: no {needed} clips with {face_info.alias}, "
                                  f"{body_info.alias} and {label_info.alias} (splits: "
                                  f"{', '.join(splits) or 'none'}; set val_split=)")
        source = describe_source(face_info)
        if c.text_weights or not source["random"]:  # find the weights before any training
            source["checkpoint"] = str(checkpoint_path(source, c.text_weights))
        return SegmentData(face=face, body=body, splits=splits, classes=classes,
                           dim=int(face_info.dim), source=source)

    def build_model(self, data: SegmentData) -> nn.Module:
        c = self.config
        prompts, descriptions = prompts_for(c.prompt_set, data.classes)
        tower = ClipTextTower(build_clip(data.source, c.text_weights))
        return TemporalAttentionClip(
            tower, prompts, descriptions, dim=data.dim, segments=c.segments, adapter=c.adapter,
            adapter_reduction=c.adapter_reduction, layers=c.temporal_layers, heads=c.heads,
            head_dim=c.head_dim, mlp_dim=c.mlp_dim, dropout=c.dropout, contexts=c.contexts,
            context_std=c.context_std, temperature=c.temperature)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        c = self.config
        return [
            {"params": [*model.temporal_face.parameters(), *model.temporal_body.parameters(),
                        *model.fusion.parameters()], "lr": c.lr},
            {"params": list(model.prompt_learner.parameters()), "lr": c.lr_prompts},
            {"params": list(model.face_adapter.parameters()), "lr": c.lr_adapter},
        ]

    # --- training ---------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, data: Any) -> None:
        self._epoch = epoch

    def train_batches(self, data: SegmentData, epoch: int, rng: np.random.Generator):
        return SegmentBatches(data, self.config, rng)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        lam, index = batch["mix_lambda"], batch["mix_index"]
        face = lam * batch["face"] + (1 - lam) * batch["face"][index]
        body = lam * batch["body"] + (1 - lam) * batch["body"][index]
        logits, _, class_text = model(face, body)
        target = batch["label"]
        loss = lam * ldl_loss(logits, target, class_text, c.ldl_temperature) + \
            (1 - lam) * ldl_loss(logits, target[index], class_text, c.ldl_temperature)
        w_mi = aux_weight(self._epoch, c.aux_warmup_epochs, c.aux_ramp_epochs, c.mi_weight)
        w_dc = aux_weight(self._epoch, c.aux_warmup_epochs, c.aux_ramp_epochs, c.dc_weight)
        if w_mi > 0:
            loss = loss + w_mi * mi_loss(class_text, model.description_features,
                                         c.mi_temperature)
        if w_dc > 0:
            loss = loss + w_dc * dc_loss(class_text)
        return loss

    # --- evaluation -------------------------------------------------------------------
    def predict(self, model: nn.Module, data: SegmentData, split: str) -> dict[str, Any]:
        part = data.split(split)
        device = next(model.parameters()).device
        frames = np.stack([segment_indices(int(n), self.config.segments) for n in part.n_frames])
        logits = []
        for start in range(0, len(part), 64):
            clips = np.arange(start, min(start + 64, len(part)))
            batch = self.to_device(gather(data, part, clips, frames[clips]), device)
            logits.append(model(batch["face"], batch["body"])[0].float().cpu())
        scores = torch.cat(logits).softmax(dim=-1).numpy()
        return {"clip_ids": list(part.clip_ids), "probabilities": scores}

    def score(self, predictions: dict[str, Any], data: SegmentData, split: str
              ) -> dict[str, Any]:
        part = data.split(split)
        if np.any(part.labels < 0):
            raise _user_error(f"temporal_attention: split {split!r} has unlabelled clips")
        position = {k: i for i, k in enumerate(predictions["clip_ids"])}
        order = [position[k] for k in part.clip_ids]
        y_pred = np.asarray(predictions["probabilities"])[order].argmax(axis=1)
        y_true = part.labels
        return {"UAR": uar(y_true, y_pred, len(data.classes)), "WAR": war(y_true, y_pred),
                "confusion_matrix": confusion_matrix(y_true, y_pred, len(data.classes))}

    def export(self, predictions: dict[str, Any], data: SegmentData, split: str,
               out_dir: Path) -> list[Path]:
        return write_csv(predictions, data.classes, split, out_dir)

    def predict_data(self, trained: SegmentData, store: Any, split: str) -> SegmentData:
        """The clips of `split` in `store` (labels where it has them); classes and the text
        tower's source are the run's."""
        c = self.config
        face_info, body_info = store.resolve(c.face_stream), store.resolve(c.body_stream)
        ids = {split: split_clip_ids(store, split, [face_info.key, body_info.key])}
        if not ids[split]:
            raise _user_error(f"{store.url}: no clip of split {split!r} has both "
                              f"{face_info.alias} and {body_info.alias}")
        face, body, splits = load_segments(store, ids, face_info, body_info,
                                           store.resolve(c.label_stream))
        return SegmentData(face=face, body=body, splits=splits, classes=trained.classes,
                           dim=trained.dim, source=trained.source)

    def prediction_tables(self, predictions: dict[str, Any], data: SegmentData, split: str
                          ) -> dict[str, PredictionTable]:
        return class_tables(predictions, data.classes)

    def ensemble(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return mean_of_runs(predictions, self.name)
