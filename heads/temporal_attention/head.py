"""RAPT-CLIP (RAER classroom emotions) as a head of the shared trainer.

Reads only the store: the per-frame CLIP ViT-B/16 embeddings of the face crops and of the body
crops (`clip-vit-b16@rapt@face`, `clip-vit-b16@rapt@body`: 512-d, projected, on the released
loader's input; `profile=fixed` reads the open_clip-normalised `clip-vit-b16@face`/`@body`) and
the class label (`raer-class`). Each clip is cut into 16 segments (TSN sampling, duration 1): in
training one random frame per segment, in evaluation the centre frame of each; frames are
gathered from the in-memory stream arrays, nothing is decoded.

Augmentation: the released loader rotates each clip's crops by one angle within +-4 degrees and
flips them with probability 1/2, drawn anew per clip and epoch (separately for face and body).
Pixels are not here, so extraction caches augmented views (`affect extract --views
hflip,rot-4,rot+4`, each a stream whose provenance names its plain stream) and training draws
one of them (or the plain stream) per clip, stream and epoch; evaluation reads the plain streams.

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
Loss: LDL + w * MI + w * DC, w = 0 before epoch 5 then linear to 0.1 over 10 epochs; no mixup
(the released main.py never passes train.sh's --mixup-alpha 0.2 to its Trainer; `fixed`
mixes with alpha 0.2); class-balanced sampling with replacement; best checkpoint by the
released trainer's validation UAR (`UAR_paper`; `UAR` is the standard one, over the classes
present in the truth).
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
from heads.metrics import confusion_matrix, uar, uar_union, war
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
    # [V, N] first row of each clip in the face (body) array, per view: row 0 is the plain
    # stream, rows 1.. the augmented views (data.face_views)
    face_rows: np.ndarray
    body_rows: np.ndarray
    n_frames: np.ndarray  # [N] frames usable in every stream

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
    # the augmented views (after the plain stream) of the face and body arrays, by name
    face_views: list[str] = field(default_factory=list)
    body_views: list[str] = field(default_factory=list)

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
            # one view (0: plain) per clip and stream, as the released loader draws a rotation
            # and a flip per clip, separately for the face and the body group
            face_view = self.rng.integers(len(split.face_rows), size=len(clips))
            body_view = self.rng.integers(len(split.body_rows), size=len(clips))
            batch = gather(self.data, split, clips, frames, face_view, body_view)
            lam = float(self.rng.beta(config.mixup_alpha, config.mixup_alpha)) \
                if config.mixup_alpha > 0 else 1.0
            batch["mix_index"] = torch.from_numpy(self.rng.permutation(len(clips)))
            batch["mix_lambda"] = torch.tensor(lam, dtype=torch.float32)
            yield batch


def gather(data: SegmentData, split: SegmentSplit, clips: np.ndarray, frames: np.ndarray,
           face_view: np.ndarray | None = None, body_view: np.ndarray | None = None
           ) -> dict[str, torch.Tensor]:
    """Face and body features [B, S, D] of the chosen frames (of the chosen views; default the
    plain streams), and the labels [B]."""
    face_view = np.zeros(len(clips), np.int64) if face_view is None else face_view
    body_view = np.zeros(len(clips), np.int64) if body_view is None else body_view
    face = data.face[split.face_rows[face_view, clips][:, None] + frames].astype(np.float32)
    body = data.body[split.body_rows[body_view, clips][:, None] + frames].astype(np.float32)
    return {"face": torch.from_numpy(face), "body": torch.from_numpy(body),
            "label": torch.from_numpy(split.labels[clips].astype(np.int64))}


def load_segments(store: Any, ids: dict[str, list[str]], face_infos: list[Any],
                  body_infos: list[Any], label_info: Any
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, SegmentSplit]]:
    """Face and body rows of every clip in `ids` (split -> clip ids) and each split's index into
    them; `face_infos`/`body_infos` are the plain stream then its views, whose arrays are put end
    to end. A clip without a label gets class -1."""
    all_ids = sorted({i for v in ids.values() for i in v})
    faces = [store.load_stream(info, all_ids) for info in face_infos]
    bodies = [store.load_stream(info, all_ids) for info in body_infos]
    labelled = store.committed_clip_ids(label_info) & set(all_ids)
    label_array = store.load_stream(label_info, sorted(labelled)) if labelled else None
    splits = {}
    for split, clip_ids in ids.items():
        if not clip_ids:
            continue
        face_rows, face_lengths = _rows(faces, clip_ids)
        body_rows, body_lengths = _rows(bodies, clip_ids)
        labels = np.array([int(np.asarray(label_array.clip(k)).reshape(-1)[0])
                           if k in labelled else -1 for k in clip_ids], dtype=np.int64)
        splits[split] = SegmentSplit(
            name=split, clip_ids=list(clip_ids), labels=labels, face_rows=face_rows,
            body_rows=body_rows, n_frames=np.minimum(face_lengths, body_lengths))
    empty = [s.clip_ids[i] for s in splits.values() for i in np.flatnonzero(s.n_frames < 1)]
    if empty:
        raise _user_error(f"{store.url}: clip {empty[0]!r} has no frames in "
                          f"{face_infos[0].alias} or {body_infos[0].alias}")
    return _end_to_end(faces), _end_to_end(bodies), splits


def _rows(arrays: list[Any], clip_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """([V, N] first row of each clip in the arrays put end to end, [N] frames in all of them)."""
    rows, lengths, shift = [], None, 0
    for array in arrays:
        index = np.array([array.index_of(k) for k in clip_ids])
        rows.append(array.offsets[index].astype(np.int64) + shift)
        n = array.lengths[index].astype(np.int64)
        lengths = n if lengths is None else np.minimum(lengths, n)
        shift += len(array.data)
    return np.stack(rows), lengths


def _end_to_end(arrays: list[Any]) -> np.ndarray:
    return arrays[0].data if len(arrays) == 1 else np.concatenate([a.data for a in arrays])


def find_views(store: Any, plain: Any) -> list[Any]:
    """The augmented views extracted beside stream `plain` (their provenance names it), by
    view name."""
    views = [s for s in store.streams() if (s.extra or {}).get("view_of") == plain.key]
    return sorted(views, key=lambda s: str((s.preprocessing or {}).get("view")))


def view_name(info: Any) -> str:
    return str((info.preprocessing or {}).get("view"))


@register_head
class TemporalAttentionHead(Head):
    name: ClassVar[str] = "temporal_attention"
    config_cls: ClassVar[type] = TemporalAttentionConfig
    default_dataset: ClassVar[str] = "raer"
    paper: ClassVar[str] = "RAPT-CLIP, RAER classroom emotions"
    metric_name: ClassVar[str] = "UAR"
    metric_mode: ClassVar[str] = "max"
    plot_metrics: ClassVar[tuple[str, ...]] = ("UAR", "WAR")

    config: TemporalAttentionConfig

    def __init__(self, config: TemporalAttentionConfig | None = None) -> None:
        super().__init__(config)
        self._epoch = 0
        # the released trainer picks its best checkpoint by its own UAR (`select_metric`)
        self.metric_name = self.config.select_metric

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
        face_views = find_views(store, face_info) if c.views == "auto" else []
        body_views = find_views(store, body_info) if c.views == "auto" else []
        for view in (*face_views, *body_views):  # a view must not drop clips from training
            lacking = len(set(all_ids) - store.committed_clip_ids(view))
            if lacking:
                raise _user_error(f"{store.url}: view stream {view.alias} lacks {lacking} of "
                                  f"the {len(all_ids)} clips; extract it again (--views) or "
                                  "train without views (--set views=none)")
        face, body, splits = load_segments(store, ids, [face_info, *face_views],
                                           [body_info, *body_views], label_info)
        for needed in ("train", c.val_split):  # before training, not after its first epoch
            if needed not in splits:
                raise _user_error(f"{store.url}: no {needed} clips with {face_info.alias}, "
                                  f"{body_info.alias} and {label_info.alias} (splits: "
                                  f"{', '.join(splits) or 'none'}; set val_split=)")
        source = describe_source(face_info)
        if c.text_weights or not source["random"]:  # find the weights before any training
            source["checkpoint"] = str(checkpoint_path(source, c.text_weights))
        return SegmentData(face=face, body=body, splits=splits, classes=classes,
                           dim=int(face_info.dim), source=source,
                           face_views=[view_name(v) for v in face_views],
                           body_views=[view_name(v) for v in body_views])

    def approximations(self, data: SegmentData) -> list[str]:
        notes = ["frozen image encoder (the released code fine-tunes CLIP's image tower at "
                 "lr 1e-6; its features are cached here)"]
        if not data.face_views and not data.body_views:
            notes.append("no augmentation (the released loader rotates each clip within +-4 "
                         "degrees and flips it; extract views with --views hflip,rot-4,rot+4)")
        else:
            views = sorted(set(data.face_views) | set(data.body_views))
            notes.append(f"augmentation from the cached views {', '.join(views)} or none, one "
                         "per clip and epoch (the released loader draws any angle within +-4 "
                         "degrees and a flip with probability 1/2)")
        return notes

    def build_model(self, data: SegmentData) -> nn.Module:
        c = self.config
        prompts, descriptions = prompts_for(c.prompt_set, data.classes)
        tower = ClipTextTower(build_clip(data.source, c.text_weights))
        return TemporalAttentionClip(
            tower, prompts, descriptions, dim=data.dim, segments=c.segments, adapter=c.adapter,
            adapter_reduction=c.adapter_reduction, layers=c.temporal_layers, heads=c.heads,
            head_dim=c.head_dim, mlp_dim=c.mlp_dim, dropout=c.dropout, contexts=c.contexts,
            context_std=c.context_std, temperature=c.temperature)

    def import_official(self, official: Any, model: nn.Module) -> None:
        """RAPT-CLIP's `GenerateModel` state dict (its `model_best.pth` "state_dict") onto ours.

        Trained parts map one to one (their `Residual(PreNorm(...))` layers onto our pre-norm
        layers). CLIP's towers are not taken: the image tower's features are the cached stream
        and the frozen text tower is rebuilt from the image stream's CLIP; the prompt token
        embeddings it saved are checked against ours, which catches a checkpoint trained on
        other prompt text or another CLIP."""
        c = self.config
        for ours, theirs in (("face", "temporal_net"), ("body", "temporal_net_body")):
            official.copy(f"temporal_{ours}.position", f"{theirs}.pos_embedding")
            for i in range(c.temporal_layers):
                mine, layer = f"temporal_{ours}.layers.{i}", \
                    f"{theirs}.temporal_transformer.layers.{i}"
                for part in ("weight", "bias"):
                    official.copy(f"{mine}.norm1.{part}", f"{layer}.0.fn.norm.{part}")
                    official.copy(f"{mine}.attn.out.0.{part}", f"{layer}.0.fn.fn.to_out.0.{part}")
                    official.copy(f"{mine}.norm2.{part}", f"{layer}.1.fn.norm.{part}")
                    official.copy(f"{mine}.ffn.0.{part}", f"{layer}.1.fn.fn.net.0.{part}")
                    official.copy(f"{mine}.ffn.3.{part}", f"{layer}.1.fn.fn.net.3.{part}")
                official.copy(f"{mine}.attn.qkv.weight", f"{layer}.0.fn.fn.to_qkv.weight")
            for part in ("0.weight", "0.bias", "2.weight", "2.bias"):
                official.copy(f"temporal_{ours}.score.{part}", f"{theirs}.attention_pool.{part}")
        official.copy("fusion.weight", "project_fc.weight")
        official.copy("fusion.bias", "project_fc.bias")
        official.copy("prompt_learner.ctx", "prompt_learner.ctx")
        if c.adapter:
            official.copy("face_adapter.net.0.weight", "face_adapter.fc.0.weight")
            official.copy("face_adapter.net.2.weight", "face_adapter.fc.2.weight")
        else:
            official.ignore("face_adapter.", "adapter=false: the face features go to the "
                                              "temporal module unadapted")
        self._check_prompt_tokens(official, model)
        tower = "CLIP's frozen text tower: rebuilt from the image stream's CLIP weights"
        for prefix in ("text_encoder.", "clip_model_.transformer.", "clip_model_.token_embedding.",
                       "clip_model_.positional_embedding", "clip_model_.ln_final.",
                       "clip_model_.text_projection"):
            official.ignore(prefix, tower)
        image = ("CLIP's image tower (fine-tuned at lr 1e-6 in the released run): the features "
                 "are the cached face and body streams, made with the stream's own CLIP")
        official.ignore("image_encoder.", image)
        official.ignore("clip_model_.visual.", image)
        official.ignore("clip_model_.logit_scale", "CLIP's logit scale: RAPT-CLIP divides by "
                                                   "its fixed temperature instead")

    def _check_prompt_tokens(self, official: Any, model: nn.Module) -> None:
        """Their saved prompt and description token embeddings equal ours (same text, same
        CLIP), or a one-line UserError naming which differs."""
        ours = {"prompt_learner.token_prefix": model.prompt_learner.prefix,
                "prompt_learner.token_suffix": model.prompt_learner.suffix}
        for theirs, mine in ours.items():
            value = official.get(theirs)
            if tuple(value.shape) != tuple(mine.shape) or not torch.allclose(
                    value.float(), mine.float(), atol=1e-4):
                raise _user_error(f"{official.source}: its prompt token embeddings ({theirs}) "
                                  "differ from ours: trained on other prompt text than "
                                  f"prompt_set={self.config.prompt_set!r}, or on another CLIP")
            official.ignore(theirs, "prompt token embeddings: rebuilt from the prompt text "
                                    "(checked equal)")
        official.ignore("hand_crafted_prompt_embeddings", "MI description token embeddings: "
                                                         "rebuilt from the description text")

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
        renormalise = c.ldl_targets == "renormalised"
        loss = lam * ldl_loss(logits, target, class_text, c.ldl_temperature, renormalise) + \
            (1 - lam) * ldl_loss(logits, target[index], class_text, c.ldl_temperature,
                                 renormalise)
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
        return {"UAR": uar(y_true, y_pred, len(data.classes)),
                "UAR_paper": uar_union(y_true, y_pred), "WAR": war(y_true, y_pred),
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
        face, body, splits = load_segments(store, ids, [face_info], [body_info],
                                           store.resolve(c.label_stream))
        return SegmentData(face=face, body=body, splits=splits, classes=trained.classes,
                           dim=trained.dim, source=trained.source)

    def prediction_tables(self, predictions: dict[str, Any], data: SegmentData, split: str
                          ) -> dict[str, PredictionTable]:
        return class_tables(predictions, data.classes)

    def ensemble(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return mean_of_runs(predictions, self.name)
