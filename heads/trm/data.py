"""CREMA-D clips for the TRM head: the rows of audio, video and text that make each clip's input.

Two samplings (`TRMConfig.sampling`):

- "released" (`load_released_clips`), as the released preprocessing (`src/encoders/video.py`,
  `src/data/preprocessor.py`) did on the media: a fixed number of video rows evenly spread over
  the whole clip (np.linspace over its frames, truncated to int), paired by index with the
  first rows of the audio stream, the sentence embedding repeated. The released frame reader
  stops picking at the first repeated index (a clip with fewer frames than it samples); rows it
  did not pick take the previous row's value. A frame without a face (a row of zeros in a
  face-crop stream) makes the whole clip's video rows zero: the released encoder hands its
  frames to MTCNN as one batch, whose face selection builds a numpy array of faces and Nones,
  which numpy >= 1.24 (facenet-pytorch's own floor) refuses, and the encoder's
  `except Exception` returns zeros for the clip.
- "clock" (`load_aligned_clips`, ours): every stream on the video stream's timeline by time.

For the clock, each stream is loaded whole (`store.load_stream`: one read per part, not one per
clip) and put onto each clip's video timeline in memory with the store's own alignment
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
    # clips listed as the released loaders list them (actor by actor in the released shuffled
    # order, `actor_rank` in the clip table); False: in clip-id order (no actor_rank)
    in_released_order: bool = True

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


def released_clip_order(store: Any, split: str, clip_ids: Sequence[str]
                        ) -> tuple[list[str], bool]:
    """`clip_ids` in the released loaders' order: by the clip table's `actor_rank` (the actor's
    place in the released shuffled actor list), then by id (the released file order); the ids
    as given, and False, when a clip has no `actor_rank`."""
    ranks = {c["clip_id"]: c.get("actor_rank") for c in store.clips(split)}
    if any(ranks.get(c) is None for c in clip_ids):
        return list(clip_ids), False
    return sorted(clip_ids, key=lambda c: (int(ranks[c]), c)), True


def released_frame_rows(n_frames: int, count: int) -> np.ndarray:
    """The video rows the released reader keeps for a clip of `n_frames` frames: `count`
    indices np.linspace(0, n_frames - 1, count) as int; -1 from the first repeated index on
    (its reader moves past that frame and never matches again, leaving those rows empty)."""
    indices = np.linspace(0, max(n_frames, 1) - 1, count, dtype=int)
    repeated = np.flatnonzero(np.diff(indices) <= 0)
    if len(repeated):
        indices[repeated[0] + 1:] = -1
    return indices


def fill_empty_rows(rows: np.ndarray) -> np.ndarray:
    """Rows of zeros take the previous row's value, front to back, as the released video
    encoder fills the rows it has no features for (leading empty rows stay zero)."""
    out = rows.copy()
    empty = ~out.any(axis=1)
    for t in range(1, len(out)):
        if empty[t] and out[t - 1].any():
            out[t] = out[t - 1]
    return out


def released_video_rows(values: np.ndarray, count: int) -> np.ndarray:
    """The `count` video rows the released encoder makes of a clip's per-frame rows `values`
    (module doc): picked rows, all zero when a picked frame had no face, the rest filled."""
    picked = released_frame_rows(len(values), count)
    read = values[picked[picked >= 0]]
    out = np.zeros((count, values.shape[1]), values.dtype)
    if read.any(axis=1).all():  # every picked frame has a face: no batch error
        out[picked >= 0] = read
    return fill_empty_rows(out)


def check_video_stream(store: Any, name: str, info: Any) -> None:
    """The video stream sets the frames (the clock, or the frames sampled): an audio or text
    stream named there trains without a word on the wrong timeline. Streams made by `extract`
    say what they were made of; others (imported, synthetic) are taken as given."""
    modality = info.extra.get("modality")
    if modality not in (None, "video"):
        raise _user_error(f"{store.url}: stream {name!r} is an {modality} stream; --set "
                          "video=... must name a video stream")


def _read_split(store: Any, split: str, streams: Sequence[str], video: str, labels: str,
                require_labels: bool) -> tuple:
    """What both samplings read of a split: its clips with every stream (in the released
    loaders' order), the streams' infos and rows, the per-frame video stream's info and the
    labels of the clips that have one."""
    needed = [*streams, labels] if require_labels else list(streams)
    clip_ids = split_clip_ids(store, split, needed)
    if not clip_ids:
        raise _user_error(f"{store.url}: no clip of split {split!r} has every stream "
                          f"({', '.join(needed)})")
    clip_ids, ordered = released_clip_order(store, split, clip_ids)
    infos = [store.resolve(s) for s in streams]
    video_info = store.resolve(video)
    if video_info.frame_shift_s is None:
        raise _user_error(f"{store.url}: stream {video!r} has one row per clip; the video "
                          "stream (the clock) must be per frame")
    check_video_stream(store, video, video_info)
    label_info = _label_info(store, labels, required=require_labels)
    arrays = {info.key: store.load_stream(info, clip_ids) for info in infos}
    labelled = store.committed_clip_ids(label_info) & set(clip_ids) if label_info else set()
    label_array = store.load_stream(label_info, sorted(labelled)) if labelled else None
    return clip_ids, ordered, infos, video_info, label_info, arrays, labelled, label_array


def load_released_clips(store: Any, split: str, streams: Sequence[str], video: str,
                        labels: str, frames: int, require_labels: bool = True) -> AlignedClips:
    """Every clip of `split` with all `streams` (and a label), sampled as the released code
    (module doc): `frames` rows of `video` spread over the clip, the other per-frame streams'
    first rows paired by index, per-utterance streams repeated."""
    (clip_ids, ordered, infos, video_info, label_info, arrays, labelled,
     label_array) = _read_split(store, split, streams, video, labels, require_labels)
    dtype = np.result_type(*(np.dtype(info.dtype) for info in infos), np.float16)
    columns: list[list[np.ndarray]] = [[] for _ in infos]
    kept: list[str] = []
    lengths: list[int] = []
    targets: list[np.ndarray] = []
    for clip_id in clip_ids:
        per_stream = []
        for info in infos:
            values = np.asarray(arrays[info.key].clip(clip_id))
            if info.key == video_info.key:
                per_stream.append(released_video_rows(values, frames))
            elif info.frame_shift_s is None:
                per_stream.append(values[:1])  # one row per utterance: repeated below
            else:
                per_stream.append(values[:frames])
        n = min(len(v) for v, info in zip(per_stream, infos) if info.frame_shift_s is not None)
        if n == 0:
            continue  # the released assembly drops a clip with an empty stream
        for k, values in enumerate(per_stream):
            rows = np.repeat(values[:1], n, axis=0) if infos[k].frame_shift_s is None \
                else values[:n]
            columns[k].append(rows.astype(dtype, copy=False))
        kept.append(clip_id)
        lengths.append(n)
        # unlabelled (new media): NaN, nothing to score against
        targets.append(np.asarray(label_array.clip(clip_id), np.float32)[0, :2]
                       if clip_id in labelled else np.full(2, np.nan, np.float32))
    if not kept:
        raise _user_error(f"{store.url}: every clip of split {split!r} has an empty stream")
    return _assemble(kept, columns, np.asarray(lengths, np.int64), np.stack(targets), infos,
                     streams, float(video_info.frame_shift_s), ordered)


def load_aligned_clips(store: Any, split: str, streams: Sequence[str], clock: str,
                       labels: str, require_labels: bool = True) -> AlignedClips:
    """Every clip of `split` that has all `streams` and a label, aligned on `clock`'s rows.

    With `require_labels=False` (prediction), clips without a label are kept too, with NaN
    targets.
    """
    (clip_ids, ordered, infos, clock_info, label_info, arrays, labelled,
     label_array) = _read_split(store, split, streams, clock, labels, require_labels)
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
    return _assemble(clip_ids, columns, lengths, targets, infos, streams, shift, ordered)


def _assemble(clip_ids: Sequence[str], columns: list[list[np.ndarray]], lengths: np.ndarray,
              targets: np.ndarray, infos: Sequence[Any], streams: Sequence[str],
              shift: float, ordered: bool) -> AlignedClips:
    features = np.concatenate([np.concatenate(col) for col in columns], axis=1)
    dims = [info.dim for info in infos]
    edges = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    return AlignedClips(
        clip_ids=list(clip_ids), features=features,
        offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lengths=lengths, targets=targets, frame_shift_s=shift,
        slices={s: (int(edges[k]), int(edges[k + 1])) for k, s in enumerate(streams)},
        in_released_order=ordered)


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
