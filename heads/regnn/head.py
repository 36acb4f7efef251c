"""REGNN as a head of the shared trainer: REACT windows from the store, REACT metrics, export.

Data (all from the store): the speaker's video stream (`swin-t`) and audio stream
(`vggish-react`), the listener reaction labels (`react-emotion`, [T, 25] at 25 fps), and per split
the appropriateness aux array `react/neighbours/<split>`: a [2L, 2L] boolean matrix over samples
whose attrs give `clip_ids` (the speaker clip of each sample: [speakers..., listeners...]) and
`listener_ids` (the clip whose reaction answers it). `matrix[k, j]` says the reaction of sample
j's listener is appropriate for sample k's speaker.

Training draws `iterations_per_epoch` batches per epoch of `batch_size` random speaker windows
(50 frames, stride 25, inside the clip) and, for each, up to `max_listeners` appropriate listener
windows at the same frames. The min-MSE threshold is head state: after the
`threshold_at_iteration`-th batch of each epoch it becomes the epoch's running average / 3.

Evaluation generates `n_samples` reactions per speaker clip and scores them with the REACT
metrics (heads.react_metrics: FRC, FRD, S-MSE, FRVar, FRDvs, TLCC); the best checkpoint is
chosen by FRC. Export writes the official layout `<out>/<split>/<clip_id>/result-<i>.pth`, each
a float tensor [T, 25] (clip ids are the `site/group/person/clip` paths).
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from features_store.paths import safe_join
from heads.base import Head, Recipe
from heads.data import FrameSequences, load_frame_sequences, split_clip_ids
from heads.prediction_table import PredictionTable, sample_tables
from heads.registry import register_head
from heads.regnn.config import RegnnConfig
from heads.regnn.loss import ThresholdSchedule
from heads.regnn.model import Regnn


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


@dataclass
class ReactSplit:
    """One split's clips and its appropriateness over samples (speaker k -> listener j)."""

    name: str
    sequences: FrameSequences  # features [R, Dv + Da] and labels [R, 25] of the split's clips
    speaker: np.ndarray  # [S] sample k -> clip index (in `sequences`) of its speaker
    listener: np.ndarray  # [S] sample k -> clip index of its own listener
    neighbours: np.ndarray  # [S, S] bool
    labelled: bool  # every kept listener clip has reaction labels

    @property
    def sample_ids(self) -> list[str]:
        return [self.sequences.clip_ids[c] for c in self.speaker]

    def rows(self, clip: int, start: int, length: int) -> slice:
        first = int(self.sequences.offsets[clip]) + start
        return slice(first, first + length)


@dataclass
class RegnnData:
    """Everything a REGNN run reads, loaded once by `build_data`."""

    splits: dict[str, ReactSplit]
    video_columns: tuple[int, int]
    audio_columns: tuple[int, int]
    label_columns: list[str] = field(default_factory=list)  # names of the reaction channels
    # training windows: (sample k, start frame) and each sample's appropriate listener clips
    train_windows: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    candidates: list[np.ndarray] = field(default_factory=list)

    def split(self, name: str) -> ReactSplit:
        if name not in self.splits:
            known = ", ".join(sorted(self.splits)) or "none"
            raise _user_error(
                f"regnn: split {name!r} was not loaded (no appropriateness aux for it in the "
                f"store; loaded splits: {known})"
            )
        return self.splits[name]

    @property
    def feature_dims(self) -> tuple[int, int]:
        return (
            self.video_columns[1] - self.video_columns[0],
            self.audio_columns[1] - self.audio_columns[0],
        )

    @property
    def label_dim(self) -> int:
        return int(next(iter(self.splits.values())).sequences.labels.shape[1])


def load_split(store: Any, config: RegnnConfig, split: str) -> ReactSplit | None:
    """A split's clips and appropriateness, or None when the store has no aux array for it.

    Samples whose speaker or listener clip lacks a feature stream, or whose listener clip lacks
    labels (in a labelled split), are dropped from both sides of the matrix (with a warning),
    so every kept speaker can be generated for and every kept reaction can be scored against.
    """
    aux_name = config.neighbours_aux.format(split=split)
    if aux_name not in store.aux_names():
        return None
    matrix, attrs = store.get_aux(aux_name)
    speakers = [str(c) for c in attrs.get("clip_ids", [])]
    if not speakers or matrix.shape != (len(speakers), len(speakers)):
        raise _user_error(
            f"{store.url}: aux {aux_name!r} has shape {matrix.shape} and {len(speakers)} "
            "attrs.clip_ids; expected a square matrix with one clip id per row"
        )
    half = len(speakers) // 2
    listeners = [str(c) for c in attrs.get("listener_ids") or speakers[half:] + speakers[:half]]
    features = [config.video_stream, config.audio_stream]
    with_features = set.intersection(*(store.committed_clip_ids(s) for s in features))
    with_labels = store.committed_clip_ids(config.label_stream)
    labelled = any(clip in with_labels for clip in listeners)
    keep = [
        k
        for k in range(len(speakers))
        if speakers[k] in with_features
        and listeners[k] in with_features
        and (not labelled or listeners[k] in with_labels)
    ]
    if not keep:
        raise _user_error(
            f"{store.url}: no sample of split {split!r} has the streams "
            f"{', '.join(features)}" + (f" and {config.label_stream}" if labelled else "")
        )
    if len(keep) < len(speakers):
        warnings.warn(
            f"regnn: split {split!r}: {len(speakers) - len(keep)} of {len(speakers)} samples "
            "dropped (a clip lacks features or labels)",
            stacklevel=2,
        )
    clip_ids = sorted({speakers[k] for k in keep} | {listeners[k] for k in keep})
    sequences = load_frame_sequences(
        store, clip_ids, features, config.label_stream, invalid_value=None
    )
    position = {clip: i for i, clip in enumerate(sequences.clip_ids)}
    kept = np.asarray(keep, dtype=np.int64)
    return ReactSplit(
        name=split,
        sequences=sequences,
        speaker=np.array([position[speakers[k]] for k in keep], dtype=np.int64),
        listener=np.array([position[listeners[k]] for k in keep], dtype=np.int64),
        neighbours=np.asarray(matrix, dtype=bool)[np.ix_(kept, kept)],
        labelled=labelled,
    )


def speaker_split(store: Any, config: RegnnConfig, split: str) -> ReactSplit:
    """Every clip of `split` with both feature streams as a speaker to generate reactions for.

    For clips with no appropriateness aux (new media, a split ingested without the challenge's
    neighbour files): no listeners, nothing to score, only generation.
    """
    features = [config.video_stream, config.audio_stream]
    clip_ids = split_clip_ids(store, split, features)
    if not clip_ids:
        raise _user_error(f"{store.url}: no clip of split {split!r} has the streams "
                          f"{', '.join(features)}")
    sequences = load_frame_sequences(
        store, clip_ids, features, config.label_stream, invalid_value=None
    )
    everyone = np.arange(len(clip_ids), dtype=np.int64)
    return ReactSplit(name=split, sequences=sequences, speaker=everyone, listener=everyone,
                      neighbours=np.zeros((len(clip_ids), len(clip_ids)), dtype=bool),
                      labelled=False)


def plan_train_windows(
    split: ReactSplit, window: int, stride: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """All (sample, start) speaker windows inside their clip, and each sample's listener clips.

    Samples without an appropriate listener are left out: they give the loss nothing.
    """
    lengths = split.sequences.lengths
    candidates = [split.listener[np.flatnonzero(row)] for row in split.neighbours]
    windows = [
        (k, start)
        for k, clip in enumerate(split.speaker)
        if len(candidates[k])
        for start in range(0, int(lengths[clip]) - window + 1, stride)
    ]
    return np.asarray(windows, dtype=np.int64).reshape(-1, 2), candidates


class WindowBatches:
    """One epoch of training batches (numpy gathers; runs in the trainer's prefetch thread)."""

    def __init__(
        self,
        data: RegnnData,
        config: RegnnConfig,
        rng: np.random.Generator,
    ) -> None:
        self.data = data
        self.split = data.split(config.train_split)
        self.config = config
        self.rng = rng
        needed = config.iterations_per_epoch * config.batch_size
        pool = len(data.train_windows)
        # whole permutations, one after another: every window once before any twice
        rounds = -(-needed // pool)
        self.order = np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:needed]

    def __len__(self) -> int:
        return self.config.iterations_per_epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        size = self.config.batch_size
        for i in range(len(self)):
            yield self.batch(self.data.train_windows[self.order[i * size : (i + 1) * size]])

    def batch(self, windows: np.ndarray) -> dict[str, torch.Tensor]:
        config, split = self.config, self.split
        seqs = split.sequences
        length, k_max = config.window, config.max_listeners
        samples, starts = windows[:, 0], windows[:, 1]
        frames = np.arange(length)
        rows = seqs.offsets[split.speaker[samples]][:, None] + starts[:, None] + frames
        speaker = seqs.features[rows]
        (v0, v1), (a0, a1) = self.data.video_columns, self.data.audio_columns
        listeners = np.zeros((len(windows), k_max, length, seqs.labels.shape[1]), np.float32)
        listener_mask = np.zeros((len(windows), k_max), dtype=bool)
        for b, (sample, start) in enumerate(windows):
            clips = self.data.candidates[sample]
            clips = clips[seqs.lengths[clips] >= start + length]  # the same frames must exist
            if len(clips) > k_max:
                clips = self.rng.choice(clips, k_max, replace=False)
            if len(clips):
                rows = seqs.offsets[clips][:, None] + start + frames
                listeners[b, : len(clips)] = seqs.labels[rows]
                listener_mask[b, : len(clips)] = True
        return {
            "video": torch.from_numpy(np.ascontiguousarray(speaker[..., v0:v1])),
            "audio": torch.from_numpy(np.ascontiguousarray(speaker[..., a0:a1])),
            "listeners": torch.from_numpy(listeners),
            "listener_mask": torch.from_numpy(listener_mask),
        }


def _check_scorable(split: ReactSplit | None, name: str) -> None:
    """Refuse before training when the validation clips are too short for the REACT metrics
    (TLCC needs MIN_FRAMES frames), not at the first evaluation after an epoch of work."""
    from heads.react_metrics import MIN_FRAMES

    if split is None or not split.labelled or not len(split.speaker):
        return
    clips = np.concatenate([split.speaker, split.listener])
    shortest = int(split.sequences.lengths[clips].min())
    if shortest < MIN_FRAMES:
        raise _user_error(f"regnn: split {name!r} has clips of {shortest} frames; REACT's TLCC "
                          f"metric needs at least {MIN_FRAMES} (use longer clips, e.g. "
                          "`affect sample --seconds 3` or more)")


def clip_seed(seed: int, clip_id: str) -> int:
    """The generator seed of one clip: its reactions do not depend on which other clips are
    generated before it (a split, a single new video)."""
    return (int(seed) * 1_000_003 + zlib.crc32(clip_id.encode("utf-8"))) % (2**63)


@register_head
class RegnnHead(Head):
    """REGNN (REACT 2023) multiple appropriate facial reaction generation."""

    name: ClassVar[str] = "regnn"
    config_cls: ClassVar[type[RegnnConfig]] = RegnnConfig
    default_dataset: ClassVar[str] = "react"
    paper: ClassVar[str] = "REGNN (Xu et al. 2023), REACT 2023/2024 baseline"
    metric_name: ClassVar[str] = "FRC"
    metric_mode: ClassVar[str] = "max"
    config: RegnnConfig

    def __init__(self, config: RegnnConfig | None = None) -> None:
        super().__init__(config)
        self.config.validate()
        self.threshold = ThresholdSchedule(
            divisor=self.config.threshold_divisor, at_iteration=self.config.threshold_at_iteration
        )
        self._last_min_mse: torch.Tensor | None = None

    def recipe(self) -> Recipe:
        config = self.config
        return Recipe(
            features=[config.video_stream, config.audio_stream],
            labels=[config.label_stream],
            aux=[
                config.neighbours_aux.format(split=split)
                for split in dict.fromkeys([config.train_split, config.val_split])
            ],
        )

    # data and model -----------------------------------------------------------------------
    def build_data(self, store: Any) -> RegnnData:
        config = self.config
        splits: dict[str, ReactSplit] = {}
        names = dict.fromkeys([config.train_split, config.val_split, "train", "val", "test"])
        for name in names:
            loaded = load_split(store, config, name)
            if loaded is not None:
                splits[name] = loaded
        if config.train_split not in splits:
            raise _user_error(
                f"{store.url}: no aux array "
                f"{config.neighbours_aux.format(split=config.train_split)!r}; ingest REACT with "
                "its neighbour_emotion_<split>.npy files"
            )
        _check_scorable(splits.get(config.val_split), config.val_split)
        train = splits[config.train_split]
        if not train.labelled:
            raise _user_error(
                f"{store.url}: split {config.train_split!r} has no {config.label_stream} labels"
            )
        slices = train.sequences.feature_slices
        data = RegnnData(
            splits=splits,
            video_columns=slices[store.resolve(config.video_stream).alias],
            audio_columns=slices[store.resolve(config.audio_stream).alias],
            label_columns=list((store.resolve(config.label_stream).extra or {}).get("columns")
                               or []),
        )
        data.train_windows, data.candidates = plan_train_windows(
            train, config.window, config.stride
        )
        if len(data.train_windows) == 0:
            raise _user_error(
                f"{store.url}: split {config.train_split!r} has no clip of at least "
                f"{config.window} frames with an appropriate listener"
            )
        return data

    def build_model(self, data: RegnnData) -> nn.Module:
        video_dim, audio_dim = data.feature_dims
        config = dataclasses.replace(
            self.config, video_dim=video_dim, audio_dim=audio_dim, out_dim=data.label_dim
        )
        return Regnn(config)

    def effective_config(self, data: RegnnData) -> dict[str, Any]:
        """The model's input and output dims are the streams' (build_model), and the clips
        are as long as the store's longest, whatever `clip_frames` says."""
        video_dim, audio_dim = data.feature_dims
        longest = max((int(np.max(s.sequences.lengths)) for s in data.splits.values()
                       if len(s.sequences.lengths)), default=None)
        effective: dict[str, Any] = {"video_dim": video_dim, "audio_dim": audio_dim,
                                     "out_dim": data.label_dim}
        if longest is not None:
            effective["clip_frames"] = min(longest, self.config.clip_frames)
        return effective

    # training -----------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, data: Any) -> None:
        self.threshold.start_epoch()

    def train_batches(self, data: RegnnData, epoch: int, rng: np.random.Generator) -> WindowBatches:
        return WindowBatches(data, self.config, rng)

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        terms = model.forward_train(
            batch["video"],
            batch["audio"],
            batch["listeners"],
            batch["listener_mask"],
            threshold=self.threshold.threshold,
        )
        self._last_min_mse = terms["min_mse"].detach()
        return terms["loss"]

    def on_iteration_end(self, epoch: int, iteration: int, loss: float) -> None:
        if self._last_min_mse is not None:
            self.threshold.observe(float(self._last_min_mse))
        if iteration + 1 == self.config.iterations_per_epoch:
            self.threshold.end_epoch()  # epochs shorter than threshold_at_iteration

    def extra_state(self) -> dict[str, Any]:
        return self.threshold.state_dict()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.threshold.load_state_dict(dict(state))

    # evaluation ---------------------------------------------------------------------------
    def predict(self, model: nn.Module, data: RegnnData, split: str) -> dict[str, np.ndarray]:
        """speaker clip id -> [n_samples, T, 25] generated reactions (seeded, reproducible)."""
        react = data.split(split)
        seqs = react.sequences
        device = next(model.parameters()).device
        (v0, v1), (a0, a1) = data.video_columns, data.audio_columns
        predictions: dict[str, np.ndarray] = {}
        for clip in dict.fromkeys(react.speaker.tolist()):
            generator = torch.Generator(device=device).manual_seed(
                clip_seed(self.config.seed, seqs.clip_ids[clip]))
            features = torch.from_numpy(seqs.features[seqs.clip_slice(clip)]).to(device)
            reactions = model.generate(
                features[:, v0:v1], features[:, a0:a1], self.config.n_samples, generator
            )
            predictions[seqs.clip_ids[clip]] = reactions.float().cpu().numpy()
        return predictions

    def predict_data(self, trained: RegnnData, store: Any, split: str) -> RegnnData:
        """The split with its appropriateness aux when `store` has one, else every clip with
        both streams as a speaker (generation only)."""
        react = load_split(store, self.config, split) or speaker_split(store, self.config, split)
        return dataclasses.replace(trained, splits={split: react})

    def prediction_tables(self, predictions: dict[str, np.ndarray], data: RegnnData,
                          split: str) -> dict[str, PredictionTable]:
        """The `n_samples` generated reactions of each clip, one after another."""
        shift = data.split(split).sequences.frame_shift_s
        return sample_tables(predictions, data.label_columns, shift)

    def score(
        self, predictions: dict[str, np.ndarray], data: RegnnData, split: str
    ) -> dict[str, float]:
        """REACT metrics of the split's samples (and the naive baselines if `eval_baselines`).

        Sequences are cut to the shortest clip involved (750 frames on REACT) so they stack.
        """
        from heads.react_metrics import naive_baselines, react_metrics

        react = data.split(split)
        if not react.labelled:
            raise _user_error(f"regnn: split {split!r} has no reaction labels to score against")
        seqs = react.sequences
        missing = [c for c in react.sample_ids if c not in predictions]
        if missing:
            raise _user_error(f"regnn: no prediction for clip {missing[0]!r} of split {split!r}")
        n_frames = min(
            int(seqs.lengths[np.concatenate([react.speaker, react.listener])].min()),
            min(int(predictions[c].shape[1]) for c in react.sample_ids),
        )

        def labels(clip: int) -> np.ndarray:
            return seqs.labels[react.rows(clip, 0, n_frames)]

        pred = np.stack([predictions[c][:, :n_frames] for c in react.sample_ids])
        gt = np.stack([labels(c) for c in react.listener])
        spk = np.stack([labels(c) for c in react.speaker])
        metrics = {k: float(v) for k, v in react_metrics(pred, gt, spk, react.neighbours).items()}
        if self.config.eval_baselines:
            baselines = naive_baselines(
                gt, spk, react.neighbours, n_pred=pred.shape[1], seed=self.config.seed
            )
            for baseline, values in baselines.items():
                metrics.update({f"{baseline}/{k}": float(v) for k, v in values.items()})
        metrics["speakers"] = len(pred)  # a count: printed and saved as an integer
        return metrics

    def export(
        self, predictions: dict[str, np.ndarray], data: Any, split: str, out_dir: Path
    ) -> list[Path]:
        """`<out_dir>/<split>/<clip_id>/result-<i>.pth`, float tensors [T, 25] (official)."""
        written: list[Path] = []
        for clip_id, reactions in predictions.items():
            folder = safe_join(out_dir, split, clip_id)
            folder.mkdir(parents=True, exist_ok=True)
            for i, reaction in enumerate(np.asarray(reactions, dtype=np.float32)):
                path = folder / f"result-{i}.pth"
                torch.save(torch.from_numpy(reaction.copy()), path)
                written.append(path)
        return written
