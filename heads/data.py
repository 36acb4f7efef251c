"""Store -> arrays helpers shared by heads: per-frame sequences on a label timeline.

Streams are loaded whole with `store.load_stream` (one read per part, not one per clip: zarr costs
about a millisecond per call) and then put onto the label stream's timeline in memory with the
store's own alignment (`features_store.align.to_timeline`, the same code `read_aligned` uses):
mean-pooling for streams faster than the labels, nearest row otherwise (video frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features_store.align import to_timeline


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


@dataclass
class FrameSequences:
    """Per-clip sequences on one timeline, stored end to end (ragged, like the store).

    Clip i is rows `offsets[i] : offsets[i] + lengths[i]` of `features` [R, D], `labels`
    [R, C] and `mask` [R] (True where the label is valid).
    """

    clip_ids: list[str]
    features: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    frame_shift_s: float
    feature_slices: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def clip_slice(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i] + self.lengths[i]))

    def index_of(self, clip_id: str) -> int:
        return self.clip_ids.index(clip_id)

    def normalize(self, mean: np.ndarray, std: np.ndarray) -> None:
        """z-normalise the features in place with given statistics (train split's)."""
        self.features -= mean
        self.features /= std


def optional_stream(store: Any, ref: str) -> Any:
    """The stream `ref` names, or None when the store has none (a store of new media may have
    no label stream at all)."""
    from features_store.errors import UserError

    try:
        return store.resolve(ref)
    except UserError:
        return None


def split_clip_ids(store: Any, split: str, streams: Sequence[str]) -> list[str]:
    """Clips of `split` for which every stream in `streams` has committed rows, sorted."""
    clip_ids = store.clip_ids(split)
    if not clip_ids:
        known = sorted({c.get("split") for c in store.clips()} - {None})
        raise _user_error(f"{store.url}: no clips in split {split!r} (splits: {known})")
    have = set(clip_ids)
    for stream in streams:
        have &= store.committed_clip_ids(stream)
    return [c for c in clip_ids if c in have]


def auto_method(source_shift: float | None, target_shift: float) -> str:
    """Mean-pool streams faster than the target timeline; nearest row for the others."""
    if source_shift is not None and source_shift < target_shift * 0.999:
        return "mean"
    return "nearest"


def load_frame_sequences(
    store: Any,
    clip_ids: Sequence[str],
    feature_streams: Sequence[str],
    label_stream: str | None,
    *,
    frame_shift_s: float | None = None,
    invalid_value: float | None = -5.0,
    methods: dict[str, str] | None = None,
) -> FrameSequences:
    """Features of `clip_ids` aligned onto the label timeline and concatenated along D.

    The timeline of a clip is the label stream's (its frame_shift_s, the clip's t0, its number
    of rows). A clip without labels (a test split, new media) gets a timeline at `frame_shift_s`
    (default: the label stream's) to the end of its longest video stream (of its longest feature
    stream when it has no video), all frames masked: a windowed audio encoder whose last window
    did not fit ends a fraction of a second before the video, and its last row is held there
    rather than the clip's last frames going unpredicted; one that pads its last window ends
    past the last frame, and no row is added there. Label rows containing `invalid_value`
    (Aff-Wild2's -5) are masked.
    """
    if not feature_streams:
        raise _user_error("no feature streams given (set features=alias1,alias2)")
    label_info = store.resolve(label_stream) if label_stream else None
    shift = frame_shift_s or (label_info.frame_shift_s if label_info else None)
    if shift is None:
        raise _user_error(f"{store.url}: label stream {label_stream!r} has no frame_shift_s; "
                          "per-frame sequences need a timeline")
    feature_infos = [store.resolve(s) for s in feature_streams]
    arrays = [store.load_stream(info, list(clip_ids)) for info in feature_infos]
    labelled = set()
    label_array = None
    label_index = store.index(label_info) if label_info is not None else None
    if label_info is not None:
        labelled = set(clip_ids) & store.committed_clip_ids(label_info)
        label_array = store.load_stream(label_info, sorted(labelled)) if labelled else None

    parts_x: list[np.ndarray] = []
    parts_y: list[np.ndarray] = []
    parts_m: list[np.ndarray] = []
    lengths: list[int] = []
    n_labels = label_info.dim if label_info is not None else 0
    for clip_id in clip_ids:
        if label_array is not None and clip_id in labelled:
            y = np.asarray(label_array.clip(clip_id), dtype=np.float32)
            t0 = float(label_array.t0[label_array.index_of(clip_id)])
            # Labels at each video's own frame rate (Aff-Wild2) carry a per-clip shift.
            clip_shift = store.clip_frame_shift(
                label_info, label_index, label_index.position[clip_id]) or shift
            mask = np.ones(len(y), dtype=bool)
            if invalid_value is not None:
                mask &= ~np.any(np.isclose(y, invalid_value), axis=1)
        else:
            t0 = min(float(a.t0[a.index_of(clip_id)]) for a in arrays)
            timed = [(a, info) for a, info in zip(arrays, feature_infos)
                     if info.frame_shift_s is not None]
            # The video's frames are the clock when there are any: an audio encoder that pads
            # its last window ends past the last frame, and a row there has no frame.
            video = [(a, info) for a, info in timed
                     if (info.extra or {}).get("modality") == "video"]
            ends = [
                float(a.t0[a.index_of(clip_id)]) + a.lengths[a.index_of(clip_id)]
                * info.frame_shift_s
                for a, info in (video or timed)
            ]
            n = int(np.floor((max(ends) - t0) / shift + 1e-6)) if ends else 1
            y = np.zeros((n, n_labels), dtype=np.float32)
            mask = np.zeros(n, dtype=bool)
            clip_shift = shift
        targets = t0 + np.arange(len(y)) * clip_shift
        columns = []
        for array, info in zip(arrays, feature_infos):
            i = array.index_of(clip_id)
            how = (methods or {}).get(info.alias) or auto_method(info.frame_shift_s, clip_shift)
            values, _ = to_timeline(np.asarray(array.clip(clip_id)), float(array.t0[i]),
                                    info.frame_shift_s, targets, clip_shift, how)
            columns.append(values)
        parts_x.append(np.concatenate(columns, axis=1) if len(columns) > 1 else columns[0])
        parts_y.append(y)
        parts_m.append(mask)
        lengths.append(len(y))

    dims = [info.dim for info in feature_infos]
    edges = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    slices = {
        info.alias: (int(edges[k]), int(edges[k + 1])) for k, info in enumerate(feature_infos)
    }
    total_dim = int(edges[-1])
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    return FrameSequences(
        clip_ids=list(clip_ids),
        features=np.concatenate(parts_x).astype(np.float32, copy=False)
        if parts_x else np.zeros((0, total_dim), np.float32),
        labels=np.concatenate(parts_y) if parts_y else np.zeros((0, n_labels), np.float32),
        mask=np.concatenate(parts_m) if parts_m else np.zeros(0, bool),
        offsets=np.concatenate([[0], np.cumsum(lengths_arr)[:-1]]).astype(np.int64)
        if lengths else np.zeros(0, np.int64),
        lengths=lengths_arr,
        frame_shift_s=float(shift),
        feature_slices=slices,
    )


def feature_stats(sequences: FrameSequences, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (float64 accumulation) over every frame of `sequences`."""
    x = sequences.features
    if len(x) == 0:
        raise _user_error("cannot compute normalisation statistics: the train split is empty")
    mean = np.zeros(x.shape[1], np.float64)
    sq = np.zeros(x.shape[1], np.float64)
    step = 65536  # blocks bound the float64 temporary on Aff-Wild2-sized inputs
    for start in range(0, len(x), step):
        block = x[start : start + step].astype(np.float64)
        mean += block.sum(0)
        sq += (block * block).sum(0)
    mean /= len(x)
    var = np.maximum(sq / len(x) - mean * mean, 0.0)
    return mean.astype(np.float32), np.sqrt(var + eps).astype(np.float32)
