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
        clip_index, start = self.items[i]
        arrays = self._open()
        ref = arrays[0]
        ci = np.array([clip_index])
        out: dict[str, torch.Tensor] = {}
        ref_rows = ref.windows(ci, np.array([start]), self.window)[0]
        mask = ref.window_mask(ci, np.array([start]), self.window)[0]
        out[self.stream_names[0]] = torch.from_numpy(np.asarray(ref_rows, dtype=np.float32))
        times = ref.t0[clip_index] + (start + np.arange(self.window)) * (
            ref.info.frame_shift_s or 0.0
        )
        for name, other in zip(self.stream_names[1:], arrays[1:]):
            n = int(other.lengths[clip_index])
            if other.info.frame_shift_s is None or n == 0:
                rows = np.repeat(other.clip(self.clip_ids[clip_index])[:1], self.window, axis=0)
                if not len(rows):
                    rows = np.zeros((self.window, other.info.dim), dtype=other.data.dtype)
            else:
                idx = np.rint((times - other.t0[clip_index]) / other.info.frame_shift_s)
                idx = np.clip(idx.astype(np.int64), 0, n - 1)
                rows = other.data[other.offsets[clip_index] + idx]
            out[name] = torch.from_numpy(np.asarray(rows, dtype=np.float32))
        out["mask"] = torch.from_numpy(mask)
        out["clip_index"] = torch.tensor(clip_index)
        out["start"] = torch.tensor(start)
        return out
