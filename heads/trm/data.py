"""CREMA-D clips for the TRM head: audio, video and text streams on the video stream's clock.

Each stream is loaded whole (`store.load_stream`: one read per part, not one per clip) and put
onto each clip's video timeline in memory with the store's own alignment
(`features_store.align.to_timeline`, the code `read_aligned` runs): mean-pooling for a stream
faster than the video, nearest row otherwise; a per-utterance stream (the sentence embedding)
is repeated on every frame. A clip's timeline runs from the video's t0 for as long as every
temporal stream has data (the end `read_aligned` picks). Features stay in the store's dtype
(float16 by default) and become float32 per batch, which halves the RAM of a 7,442-clip store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from features_store.align import to_timeline
from heads.data import auto_method, optional_stream, split_clip_ids


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


@dataclass
class AlignedClips:
    """Clips of one split on their video timelines, rows end to end (ragged, like the store).

    Clip i is rows `offsets[i] : offsets[i] + lengths[i]` of `features` [R, D]; `targets` [N, 2]
    is the clip's valence/arousal (per clip in CREMA-D, the same for every frame).
    """

    clip_ids: list[str]
    features: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    frame_shift_s: float
    slices: dict[str, tuple[int, int]]

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def batch(self, clips: Sequence[int], max_frames: int = 0) -> dict[str, torch.Tensor]:
        """Padded inputs [B, T, D] float32, mask [B, T], targets [B, 2] of the given clips."""
        clips = np.asarray(clips, dtype=np.int64)
        lengths = self.lengths[clips]
        if max_frames > 0:
            lengths = np.minimum(lengths, max_frames)
        frames = int(lengths.max()) if len(clips) else 0
        t = np.arange(frames)
        present = t[None, :] < lengths[:, None]
        rows = self.offsets[clips][:, None] + np.minimum(t[None, :], (lengths - 1)[:, None])
        x = self.features[rows].astype(np.float32)
        x[~present] = 0.0
        return {
            "x": torch.from_numpy(x),
            "mask": torch.from_numpy(present),
            "lengths": torch.from_numpy(lengths.astype(np.int64)),
            "y": torch.from_numpy(self.targets[clips].astype(np.float32)),
            "clips": clips,
        }


def load_aligned_clips(store: Any, split: str, streams: Sequence[str], clock: str,
                       labels: str, require_labels: bool = True) -> AlignedClips:
    """Every clip of `split` that has all `streams` and a label, aligned on `clock`'s rows.

    With `require_labels=False` (prediction), clips without a label are kept too, with NaN
    targets.
    """
    needed = [*streams, labels] if require_labels else list(streams)
    clip_ids = split_clip_ids(store, split, needed)
    if not clip_ids:
        raise _user_error(f"{store.url}: no clip of split {split!r} has every stream "
                          f"({', '.join(needed)})")
    infos = [store.resolve(s) for s in streams]
    clock_info = store.resolve(clock)
    if clock_info.frame_shift_s is None:
        raise _user_error(f"{store.url}: stream {clock!r} has one row per clip; the clock must "
                          "be a per-frame stream (the video features)")
    modality = clock_info.extra.get("modality")
    if modality not in (None, "video"):  # streams made by `extract` say what they were made of
        raise _user_error(f"{store.url}: stream {clock!r} is an {modality} stream; the clock "
                          "(--set video=...) must be a video stream")
    label_info = _label_info(store, labels, required=require_labels)
    arrays = {info.key: store.load_stream(info, clip_ids) for info in infos}
    labelled = store.committed_clip_ids(label_info) & set(clip_ids) if label_info else set()
    label_array = store.load_stream(label_info, sorted(labelled)) if labelled else None
    shift = float(clock_info.frame_shift_s)
    columns: list[list[np.ndarray]] = [[] for _ in infos]
    lengths = np.zeros(len(clip_ids), np.int64)
    targets = np.zeros((len(clip_ids), 2), np.float32)
    dtype = np.result_type(*(np.dtype(info.dtype) for info in infos), np.float16)
    for c, clip_id in enumerate(clip_ids):
        clock_array = arrays[clock_info.key]
        i = clock_array.index_of(clip_id)
        t0 = float(clock_array.t0[i])
        end = t0 + len(clock_array.clip(clip_id)) * shift
        for info in infos:
            if info.frame_shift_s is not None:
                a = arrays[info.key]
                j = a.index_of(clip_id)
                end = min(end, float(a.t0[j]) + a.lengths[j] * info.frame_shift_s)
        n = max(1, int(np.floor((end - t0) / shift + 1e-6)))
        times = t0 + np.arange(n) * shift
        for k, info in enumerate(infos):
            a = arrays[info.key]
            j = a.index_of(clip_id)
            values, _ = to_timeline(np.asarray(a.clip(clip_id)), float(a.t0[j]),
                                    info.frame_shift_s, times, shift,
                                    auto_method(info.frame_shift_s, shift))
            columns[k].append(values.astype(dtype, copy=False))
        lengths[c] = n
        if clip_id in labelled:
            targets[c] = np.asarray(label_array.clip(clip_id), np.float32)[0, :2]
        else:
            targets[c] = np.nan  # unlabelled (new media): nothing to score against
    features = np.concatenate([np.concatenate(col) for col in columns], axis=1)
    dims = [info.dim for info in infos]
    edges = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    return AlignedClips(
        clip_ids=list(clip_ids), features=features,
        offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lengths=lengths, targets=targets, frame_shift_s=shift,
        slices={s: (int(edges[k]), int(edges[k + 1])) for k, s in enumerate(streams)})


def _label_info(store: Any, labels: str, required: bool) -> Any:
    """The label stream, checked to be one valence/arousal row per clip; None when it is
    missing and not `required`."""
    info = store.resolve(labels) if required else optional_stream(store, labels)
    if info is None:
        return None
    if info.frame_shift_s is not None:
        raise _user_error(f"{store.url}: label stream {labels!r} is per frame; TRM reads one "
                          "valence/arousal target per clip (as CREMA-D's cremad-va)")
    if info.dim < 2:
        raise _user_error(f"{store.url}: label stream {labels!r} has {info.dim} column(s);"
                          " TRM needs valence and arousal")
    return info
