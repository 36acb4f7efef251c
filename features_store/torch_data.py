"""A torch `Dataset` of fixed-length windows over one or more streams, for heads.

The dataset pickles as a store URL and stream names only; each DataLoader worker opens its own
handles on first use (zarr, h5py and fsspec handles must not cross processes; use the "spawn"
start method with h5py). Reads go through the in-memory fast path, so a window costs a gather,
not a backend call. Streams of other rates are mapped onto the first stream's timeline (nearest
row), and per-clip streams (one row per clip) are repeated along the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .store import open_store
from .stream_array import StreamArray


class WindowDataset(Dataset):
    def __init__(
        self,
        store_url: str,
        streams: Sequence[str],
        window: int,
        stride: int | None = None,
        clip_ids: Sequence[str] | None = None,
        split: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.store_url = store_url
        self.stream_names = list(streams)
        self.window = window
        self.stride = stride or window
        self.cache_dir = cache_dir
        store = open_store(store_url, mode="r")
        reference = store.index(self.stream_names[0])
        if clip_ids is not None:
            wanted = list(clip_ids)
        else:
            wanted = store.clip_ids(split)
            if not wanted and split is None:
                # No clip table (e.g. a stream brought in by `store import`): every clip.
                wanted = list(reference.clip_ids)
        wanted = [c for c in wanted if c in reference]
        self.clip_ids = wanted
        lengths = [int(reference.n_rows[reference.position[c]]) for c in wanted]
        self.items = [
            (ci, start)
            for ci, n in enumerate(lengths)
            for start in range(0, max(1, n - self.window + self.stride), self.stride)
        ]
        self._arrays: list[StreamArray] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = None  # reopened lazily in each worker
        return state

    def _open(self) -> list[StreamArray]:
        if self._arrays is None:
            store = open_store(self.store_url, mode="r")
            self._arrays = [
                store.load_stream(name, self.clip_ids, self.cache_dir)
                for name in self.stream_names
            ]
        return self._arrays

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.gather([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        # DataLoader hands a whole batch of indices here: one gather per stream for the batch
        # instead of a dozen numpy calls per window.
        return self.gather(indices)

    def gather(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """The windows `indices` as per-item dicts: stream name -> [window, D], plus mask."""
        arrays = self._open()
        ref = arrays[0]
        clip_index = np.fromiter((self.items[i][0] for i in indices), np.int64, len(indices))
        starts = np.fromiter((self.items[i][1] for i in indices), np.int64, len(indices))
        batch: dict[str, np.ndarray] = {
            self.stream_names[0]: ref.windows(clip_index, starts, self.window),
        }
        mask = ref.window_mask(clip_index, starts, self.window)
        frames = starts[:, None] + np.arange(self.window)[None, :]
        times = ref.t0[clip_index][:, None] + frames * (ref.info.frame_shift_s or 0.0)
        for name, other in zip(self.stream_names[1:], arrays[1:]):
            n = other.lengths[clip_index]
            if other.info.frame_shift_s is None:
                idx = np.zeros_like(frames)  # one row per clip, repeated along the window
            else:
                idx = np.rint((times - other.t0[clip_index][:, None]) / other.info.frame_shift_s)
                idx = idx.astype(np.int64)
            idx = np.clip(idx, 0, np.maximum(n - 1, 0)[:, None])
            if len(other.data) == 0:
                rows = np.zeros((*idx.shape, other.info.dim), dtype=np.float32)
            else:
                rows = other.data[(other.offsets[clip_index][:, None] + idx).clip(
                    0, len(other.data) - 1)]
                rows[n == 0] = 0  # a clip with no rows in this stream reads as zeros
            batch[name] = rows
        tensors = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in batch.items()}
        mask_t = torch.from_numpy(mask)
        return [
            {**{k: v[b] for k, v in tensors.items()}, "mask": mask_t[b],
             "clip_index": torch.tensor(int(clip_index[b])), "start": torch.tensor(int(starts[b]))}
            for b in range(len(indices))
        ]
