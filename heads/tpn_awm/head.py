"""AWTPN (adaptive weighted temporal prototype network) as a head: IEMOCAP, MELD, CMU-MOSEI.

Reads only the store: an audio stream (`wav2vec2-base`, per frame) and a video stream
(`clip-vit-b16`, per frame) of each utterance, and the dataset's class label. Sequences keep
their own lengths: a batch is padded to its longest utterance and every operation is masked,
where the released code pads every utterance to one fixed length and averages over the padding.

Classes and splits are the store's, as the dataset adapters ingest them: IEMOCAP 6 classes
(hap, sad, neu, ang, exc, fru; sessions 1-4 train, 5 test), MELD 7 (official train/dev/test),
CMU-MOSEI 6 (the argmax of the six emotion intensities; segments with no emotion are left out).

The default (`profile=paper`) is the released code: the inter-modal loss with its original sign
relu(m + cos(a, v) - cos(a, v_neg)), which pushes matched pairs apart; negatives drawn with
`randperm` (an utterance may be its own negative); no padding mask (pooling, attention and the
losses average over a batch's zero padding). `profile=fixed` corrects all three (`inter_sign`,
`negatives`, `padding_mask`).
The validation split is never the test split: where the store has none (IEMOCAP), a fixed share
of the training speakers is held out (`val_fraction`, `val_seed`; see the config).
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


def negative_partners(rng: np.random.Generator, n: int, rule: str) -> np.ndarray:
    """Each utterance's negative partner in a batch of n: "randperm" as the released code (a
    permutation, fixed points allowed), or "derangement" (always another utterance)."""
    return rng.permutation(n) if rule == "randperm" else derangement(rng, n)


class ShuffledBatches:
    """One epoch of shuffled batches, assembled lazily (the last one may be smaller, as the
    paper's DataLoader), each with two negative partners per utterance."""

    def __init__(self, split: UtteranceSplit, size: int, rng: np.random.Generator,
                 negatives: str = "derangement") -> None:
        self.split, self.size, self.rng = split, max(1, size), rng
        self.negatives = negatives
        self.order = rng.permutation(len(split))

    def __len__(self) -> int:
        return -(-len(self.order) // self.size)

    def __iter__(self):
        for start in range(0, len(self.order), self.size):
            items = self.order[start: start + self.size]
            batch = self.split.batch(items)
            for name in ("inter_negative", "contrast_negative"):
                batch[name] = torch.from_numpy(
                    negative_partners(self.rng, len(items), self.negatives))
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
        if c.val_split == "auto":  # runs from before validation sets were carved
            c.val_split = "val"
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
        clips = store.clips()
        if not c.val_carved and not any(clip.get("split") == c.val_split for clip in clips):
            c.val_carved = carve_validation(clips, c.val_fraction, c.val_seed, store.url,
                                            c.val_split)

    def paper_config(self, store: Any) -> TpnAwmConfig:
        reference = TpnAwmHead(TpnAwmConfig())
        reference._settle(store)
        return reference.config

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
        clips = store.clips()
        present = {clip.get("split") for clip in clips}
        held_out = carved_ids(clips, c.val_carved)
        splits: dict[str, UtteranceSplit] = {}
        dropped = 0
        for split in dict.fromkeys(("train", c.val_split, "test")):
            if held_out and split in ("train", c.val_split):
                source = "train"  # the validation set is carved out of the training split
            elif split in present:
                source = split
            else:
                continue
            clip_ids = split_clip_ids(store, source, streams)
            if held_out:
                wanted = split == c.val_split
                clip_ids = [k for k in clip_ids if (k in held_out) == wanted]
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
        streams = [audio_info.key, video_info.key]
        clips = store.clips()
        held_out = carved_ids(clips, c.val_carved)
        if held_out and split in ("train", c.val_split) and \
                not any(clip.get("split") == split for clip in clips if split != "train"):
            clip_ids = [k for k in split_clip_ids(store, "train", streams)
                        if (k in held_out) == (split == c.val_split)]
        else:
            clip_ids = split_clip_ids(store, split, streams)
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
        return ShuffledBatches(data.split("train"), self.config.batch_size, rng,
                               self.config.negatives)

    def _masks(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The padding masks the model sees: the real ones, or (as released) every padded
        frame counted as real."""
        if self.config.padding_mask:
            return batch["audio_mask"], batch["video_mask"]
        return torch.ones_like(batch["audio_mask"]), torch.ones_like(batch["video_mask"])

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        audio_mask, video_mask = self._masks(batch)
        out = model(batch["audio"], audio_mask, batch["video"], video_mask)
        parts = awtpn_losses(out, batch["label"], audio_mask, video_mask,
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
            audio_mask, video_mask = self._masks(batch)
            out = model(batch["audio"], audio_mask, batch["video"], video_mask)
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

    def approximations(self, data: UtteranceData) -> list[str]:
        if self.config.padding_mask:
            return []
        # unmasked averages count the padding, and how much there is depends on the length
        # the features are padded to: the released preprocessing that fixes it is not public
        return ["padding to each batch's longest utterance (released: one fixed length)"]

    def import_official(self, official: Any, model: nn.Module) -> None:
        """The released `AWTPN` module (models/awtpn.py): the same layers under other names;
        one query/key pair per modality in one AWM module there, one module per modality here."""
        for ours, theirs in (("ses.audio.0.", "ses.audio_proj.0."),
                             ("ses.video.0.", "ses.video_proj.0."),
                             ("awm_audio.query.", "awm.q_a."), ("awm_audio.key.", "awm.k_a."),
                             ("awm_video.query.", "awm.q_v."), ("awm_video.key.", "awm.k_v."),
                             ("classifier.", "classifier.")):
            official.copy_prefix(ours, theirs)
        official.copy("prototypes", "tpn.prototypes")


def carve_validation(clips: list[dict[str, Any]], fraction: float, seed: int, where: str,
                     split: str) -> tuple[str, ...]:
    """The training speakers (or, where the clip table names none, utterance ids) held out as
    the validation set: max(1, round(fraction * n)) of the n sorted names, drawn by
    `np.random.RandomState(seed)`. One line of error where nothing can be carved."""
    train = [clip for clip in clips if clip.get("split") == "train"]
    if fraction <= 0 or not train:
        raise _user_error(f"{where}: no clips in split {split!r} to select the best checkpoint "
                          "on, and val_fraction=0 forbids carving one out of train; set "
                          "val_split= or val_fraction=")
    speakers = sorted({str(clip["speaker"]) for clip in train if clip.get("speaker")})
    names = speakers if len(speakers) >= 2 else sorted(str(clip["clip_id"]) for clip in train)
    count = max(1, round(fraction * len(names)))
    if count >= len(names):
        raise _user_error(f"{where}: too few training speakers/utterances ({len(names)}) to "
                          f"carve a validation set of val_fraction={fraction}")
    chosen = np.random.RandomState(seed).permutation(len(names))[:count]
    prefix = "speaker:" if names is speakers else "clip:"
    return tuple(prefix + names[i] for i in sorted(chosen))


def carved_ids(clips: list[dict[str, Any]], carved: tuple[str, ...]) -> set[str]:
    """Clip ids of the training clips named by `carve_validation`'s result."""
    speakers = {c[len("speaker:"):] for c in carved if c.startswith("speaker:")}
    utterances = {c[len("clip:"):] for c in carved if c.startswith("clip:")}
    return {str(clip["clip_id"]) for clip in clips if clip.get("split") == "train" and
            (str(clip.get("speaker")) in speakers or str(clip["clip_id"]) in utterances)}
