"""AWTPN (adaptive weighted temporal prototype network) as a head: IEMOCAP, MELD, CMU-MOSEI.

Reads only the store: an audio stream (`wav2vec2-base`, per frame) and a video stream
(`clip-vit-b16`, per frame) of each utterance, and the dataset's class label. Sequences keep
their own lengths: a batch is padded to its longest utterance and every operation is masked,
where the released code pads every utterance to one fixed length and averages over the padding.

Classes and splits are the store's, as the dataset adapters ingest them: IEMOCAP 6 classes
(hap, sad, neu, ang, exc, fru; sessions 1-4 train, 5 test), MELD 7 (official train/dev/test),
CMU-MOSEI 6 (the argmax of the six emotion intensities; segments with no emotion are left out).

Differences from the released code, and why:
- the inter-modal loss has the correct sign by default, relu(m + cos(a, v_neg) - cos(a, v)):
  the released code's relu(m + cos(a, v) - cos(a, v_neg)) pushes matched pairs apart
  (`--set inter_sign=original` restores it);
- negatives are another utterance of the batch (a random derangement), never the utterance
  itself, which the released code's `randperm` allows;
- losses and pooling average over real frames only (see above).
Best checkpoint by weighted F1 on the validation split; accuracy (w-ACC) reported beside it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from heads.base import Head, Recipe
from heads.class_predictions import mean_of_runs, write_csv
from heads.data import optional_stream, split_clip_ids
from heads.metrics import confusion_matrix, war, weighted_f1
from heads.prediction_table import PredictionTable, class_tables
from heads.registry import register_head
from heads.tpn_awm.config import INTER_SIGNS, PRESETS, TpnAwmConfig
from heads.tpn_awm.model import Awtpn, awtpn_losses


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


@dataclass
class Ragged:
    """Rows of many utterances end to end: utterance i is data[offsets[i]:offsets[i]+lengths[i]]."""

    data: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    def pad(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T_max, D] features (zeros past each end) and the [B, T_max] mask."""
        lengths = self.lengths[items]
        t_max = int(lengths.max())
        frame = np.arange(t_max)[None, :]
        mask = frame < lengths[:, None]
        rows = self.offsets[items][:, None] + np.minimum(frame, lengths[:, None] - 1)
        values = self.data[rows].astype(np.float32)
        values[~mask] = 0.0
        return torch.from_numpy(values), torch.from_numpy(mask)


@dataclass
class UtteranceSplit:
    name: str
    clip_ids: list[str]
    labels: np.ndarray  # [N] class ids
    audio: Ragged
    video: Ragged

    def __len__(self) -> int:
        return len(self.clip_ids)

    def normalize(self, norm: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """z-normalise the audio and video frames with (mean, std) per modality (train's)."""
        for name, (mean, std) in norm.items():
            ragged = getattr(self, name)
            ragged.data = (ragged.data.astype(np.float32) - mean) / std

    def batch(self, items: np.ndarray) -> dict[str, torch.Tensor]:
        audio, audio_mask = self.audio.pad(items)
        video, video_mask = self.video.pad(items)
        return {"audio": audio, "audio_mask": audio_mask, "video": video,
                "video_mask": video_mask, "label": torch.from_numpy(self.labels[items])}


@dataclass
class UtteranceData:
    splits: dict[str, UtteranceSplit]
    classes: list[str]
    audio_dim: int
    video_dim: int
    # train-split (mean, std) per modality when `normalize` is on; new clips reuse them
    norm: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def split(self, name: str) -> UtteranceSplit:
        if name not in self.splits:
            raise _user_error(f"tpn_awm: no labelled utterances of split {name!r} with both "
                              f"streams (splits: {', '.join(self.splits) or 'none'})")
        return self.splits[name]


def derangement(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation with no fixed point (n > 1): each item gets another's partner."""
    if n < 2:
        return np.arange(n)
    order = rng.permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.roll(order, -1)
    return out


class ShuffledBatches:
    """One epoch of shuffled batches, assembled lazily (the last one may be smaller, as the
    paper's DataLoader), each with two negative partners per utterance."""

    def __init__(self, split: UtteranceSplit, size: int, rng: np.random.Generator) -> None:
        self.split, self.size, self.rng = split, max(1, size), rng
        self.order = rng.permutation(len(split))

    def __len__(self) -> int:
        return -(-len(self.order) // self.size)

    def __iter__(self):
        for start in range(0, len(self.order), self.size):
            items = self.order[start: start + self.size]
            batch = self.split.batch(items)
            batch["inter_negative"] = torch.from_numpy(derangement(self.rng, len(items)))
            batch["contrast_negative"] = torch.from_numpy(derangement(self.rng, len(items)))
            yield batch


def _stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all frames (float64 accumulation, in blocks)."""
    total = np.zeros(values.shape[1]), np.zeros(values.shape[1])
    for start in range(0, len(values), 65536):
        block = values[start: start + 65536].astype(np.float64)
        total[0].__iadd__(block.sum(0))
        total[1].__iadd__((block * block).sum(0))
    mean = total[0] / max(len(values), 1)
    std = np.sqrt(np.maximum(total[1] / max(len(values), 1) - mean * mean, 0.0) + 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def class_ids(values: np.ndarray, dataset: str) -> np.ndarray:
    """Class id per utterance from its label rows; -1 where the row names no class."""
    values = np.asarray(values)
    if dataset == "mosei":
        emotions = values[:, :6]
        ids = emotions.argmax(axis=1)
        return np.where(emotions.max(axis=1) > 0, ids, -1).astype(np.int64)
    return values.reshape(len(values), -1)[:, 0].astype(np.int64)


def load_utterances(store: Any, split: str, clip_ids: list[str], labels: np.ndarray,
                    audio_info: Any, video_info: Any) -> UtteranceSplit:
    """The audio and video frames of `clip_ids`, as stored (not normalised)."""
    audio = store.load_stream(audio_info, clip_ids)
    video = store.load_stream(video_info, clip_ids)
    short = [k for k, n, m in zip(clip_ids, audio.lengths, video.lengths) if n < 1 or m < 1]
    if short:
        raise _user_error(f"{store.url}: utterance {short[0]!r} has no frames in "
                          f"{audio_info.alias} or {video_info.alias}")
    return UtteranceSplit(
        name=split, clip_ids=list(clip_ids), labels=np.asarray(labels, np.int64),
        audio=Ragged(audio.data, audio.offsets.astype(np.int64), audio.lengths.astype(np.int64)),
        video=Ragged(video.data, video.offsets.astype(np.int64), video.lengths.astype(np.int64)))


@register_head
class TpnAwmHead(Head):
    name: ClassVar[str] = "tpn_awm"
    config_cls: ClassVar[type] = TpnAwmConfig
    default_dataset: ClassVar[str] = "iemocap"
    paper: ClassVar[str] = "AWTPN (temporal prototypes, adaptive weights)"
    metric_name: ClassVar[str] = "w-F1"
    metric_mode: ClassVar[str] = "max"
    plot_metrics: ClassVar[tuple[str, ...]] = ("w-ACC",)

    config: TpnAwmConfig

    def recipe(self) -> Recipe:
        c = self.config
        labels = [c.label_stream or str(PRESETS[c.dataset]["labels"])] \
            if (c.label_stream or c.dataset in PRESETS) else []
        return Recipe(features=[c.audio_stream, c.video_stream], labels=labels)

    def _settle(self, store: Any) -> None:
        """Fill the dataset-dependent defaults from the store (recorded in RUN/config.json)."""
        c = self.config
        if c.inter_sign not in INTER_SIGNS:
            raise _user_error(f"inter_sign={c.inter_sign!r}: use one of {', '.join(INTER_SIGNS)}")
        if not c.dataset:
            c.dataset = str((getattr(store, "attrs", None) or {}).get("dataset") or "")
        if c.dataset not in PRESETS and not c.label_stream:
            raise _user_error(f"{store.url}: dataset {c.dataset or '(unknown)'!r} has no tpn_awm "
                              f"preset ({', '.join(PRESETS)}); set dataset= or label_stream=")
        preset = PRESETS.get(c.dataset, {})
        c.label_stream = c.label_stream or str(preset["labels"])
        if c.preset_batch_size:
            if c.batch_size == TpnAwmConfig.batch_size:  # left at its default: the paper's
                c.batch_size = int(preset.get("batch_size", c.batch_size))
            c.preset_batch_size = False  # settled: a resumed or reloaded run keeps this value
        if c.val_split == "auto":
            present = {clip.get("split") for clip in store.clips()}
            c.val_split = "val" if "val" in present else "test"

    def build_data(self, store: Any) -> UtteranceData:
        self._settle(store)
        c = self.config
        audio_info, video_info = store.resolve(c.audio_stream), store.resolve(c.video_stream)
        try:
            label_info = store.resolve(c.label_stream)
        except Exception:
            raise _user_error(f"{store.url}: head tpn_awm needs label stream {c.label_stream!r}; "
                              f"make it with: affect ingest --dataset {c.dataset} --data-root "
                              f"DATA --store {store.url}") from None
        if c.dataset == "mosei":
            classes = list((label_info.extra or {}).get("columns") or [])[:6]
        else:
            classes = list((label_info.extra or {}).get("classes") or [])
        if not classes:
            raise _user_error(f"{store.url}: label stream {label_info.alias} names no classes")
        streams = [audio_info.key, video_info.key, label_info.key]
        present = {clip.get("split") for clip in store.clips()}
        splits: dict[str, UtteranceSplit] = {}
        dropped = 0
        for split in dict.fromkeys(("train", c.val_split, "test")):
            if split not in present:
                continue
            clip_ids = split_clip_ids(store, split, streams)
            if not clip_ids:
                continue
            labels_array = store.load_stream(label_info, clip_ids)
            labels = class_ids(np.concatenate([np.asarray(labels_array.clip(k))[:1]
                                               for k in clip_ids]), c.dataset)
            keep = [k for k, y in zip(clip_ids, labels) if y >= 0]
            dropped += len(clip_ids) - len(keep)
            if not keep:
                continue
            splits[split] = load_utterances(store, split, keep, labels[labels >= 0],
                                            audio_info, video_info)
        norm: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if c.normalize and "train" in splits:
            for ragged in ("audio", "video"):
                norm[ragged] = _stats(getattr(splits["train"], ragged).data)
            for part in splits.values():
                part.normalize(norm)
        if dropped:
            warnings.warn(f"tpn_awm: {dropped} utterance(s) name no class (no emotion) and are "
                          "left out", stacklevel=2)
        for needed in ("train", c.val_split):  # before training, not after its first epoch
            if needed not in splits:
                raise _user_error(f"{store.url}: no {needed} utterances with {audio_info.alias},"
                                  f" {video_info.alias} and {label_info.alias} (splits: "
                                  f"{', '.join(splits) or 'none'}; set val_split=)")
        return UtteranceData(splits=splits, classes=classes, audio_dim=int(audio_info.dim),
                             video_dim=int(video_info.dim), norm=norm)

    def predict_data(self, trained: UtteranceData, store: Any, split: str) -> UtteranceData:
        """Every utterance of `split` with both streams, labelled or not (class -1), normalised
        with the run's train statistics."""
        c = self.config
        audio_info, video_info = store.resolve(c.audio_stream), store.resolve(c.video_stream)
        clip_ids = split_clip_ids(store, split, [audio_info.key, video_info.key])
        if not clip_ids:
            raise _user_error(f"{store.url}: no utterance of split {split!r} has both "
                              f"{audio_info.alias} and {video_info.alias}")
        labels = np.full(len(clip_ids), -1, np.int64)
        label_info = optional_stream(store, c.label_stream)
        committed = store.committed_clip_ids(label_info) if label_info is not None else set()
        labelled = [k for k in clip_ids if k in committed]
        if labelled:
            rows = store.load_stream(label_info, labelled)
            ids = class_ids(np.concatenate([np.asarray(rows.clip(k))[:1] for k in labelled]),
                            c.dataset)
            position = {k: i for i, k in enumerate(clip_ids)}
            labels[[position[k] for k in labelled]] = ids
        part = load_utterances(store, split, clip_ids, labels, audio_info, video_info)
        part.normalize(trained.norm)
        return dataclasses.replace(trained, splits={split: part})

    def prediction_tables(self, predictions: dict[str, Any], data: UtteranceData, split: str
                          ) -> dict[str, PredictionTable]:
        return class_tables(predictions, data.classes)

    def build_model(self, data: UtteranceData) -> nn.Module:
        c = self.config
        return Awtpn(data.audio_dim, data.video_dim, len(data.classes), shared_dim=c.shared_dim,
                     dropout=c.dropout, distance_scale_audio=c.distance_scale_audio,
                     distance_scale_video=c.distance_scale_video, alpha_audio=c.alpha_audio,
                     beta_video=c.beta_video)

    def train_batches(self, data: UtteranceData, epoch: int, rng: np.random.Generator):
        return ShuffledBatches(data.split("train"), self.config.batch_size, rng)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        out = model(batch["audio"], batch["audio_mask"], batch["video"], batch["video_mask"])
        parts = awtpn_losses(out, batch["label"], batch["audio_mask"], batch["video_mask"],
                             batch["inter_negative"], batch["contrast_negative"],
                             inter_margin=c.inter_margin, contrast_margin=c.contrast_margin,
                             inter_sign=c.inter_sign)
        return (c.w_align * parts["align"] + c.w_intra * parts["intra"]
                + c.w_inter * parts["inter"] + c.w_contrast * parts["contrast"]
                + c.w_ce * parts["ce"] + c.w_mse * parts["mse"])

    def predict(self, model: nn.Module, data: UtteranceData, split: str) -> dict[str, Any]:
        part = data.split(split)
        device = next(model.parameters()).device
        scores = []
        for start in range(0, len(part), 32):
            batch = self.to_device(part.batch(np.arange(start, min(start + 32, len(part)))),
                                   device)
            out = model(batch["audio"], batch["audio_mask"], batch["video"], batch["video_mask"])
            scores.append(out["logits"].float().softmax(dim=-1).cpu())
        return {"clip_ids": list(part.clip_ids), "probabilities": torch.cat(scores).numpy()}

    def score(self, predictions: dict[str, Any], data: UtteranceData, split: str
              ) -> dict[str, Any]:
        part = data.split(split)
        if np.any(part.labels < 0):
            raise _user_error(f"tpn_awm: split {split!r} has unlabelled utterances")
        position = {k: i for i, k in enumerate(predictions["clip_ids"])}
        y_pred = np.asarray(predictions["probabilities"])[[position[k] for k in part.clip_ids]]
        y_pred = y_pred.argmax(axis=1)
        n = len(data.classes)
        return {"w-F1": weighted_f1(part.labels, y_pred, n), "w-ACC": war(part.labels, y_pred),
                "confusion_matrix": confusion_matrix(part.labels, y_pred, n)}

    def export(self, predictions: dict[str, Any], data: UtteranceData, split: str,
               out_dir: Path) -> list[Path]:
        return write_csv(predictions, data.classes, split, out_dir)

    def ensemble(self, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        return mean_of_runs(predictions, self.name)
