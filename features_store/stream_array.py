"""A whole stream in one array: the training reader's fast path.

Zarr costs about a millisecond per read call, which a training loop drawing thousands of windows
per second cannot pay. A `StreamArray` copies the committed parts once into one `[rows, D]` array
(in memory, or a memmap file in a cache folder keyed by the committed parts, so a changed stream
never serves stale rows), after which a batch of windows is a single fancy-indexing gather.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import UserError
from .fingerprint import fingerprint

if TYPE_CHECKING:
    from .index import StreamIndex
    from .manifest import StreamInfo
    from .store import FeatureStore


@dataclass
class StreamArray:
    info: StreamInfo
    data: np.ndarray
    clip_ids: list[str]
    offsets: np.ndarray
    lengths: np.ndarray
    t0: np.ndarray

    def __post_init__(self) -> None:
        self._position = {c: i for i, c in enumerate(self.clip_ids)}

    @classmethod
    def from_store(
        cls,
        store: FeatureStore,
        info: StreamInfo,
        index: StreamIndex,
        clip_ids: Sequence[str] | None,
        cache_dir: str | None,
    ) -> StreamArray:
        if clip_ids is None:
            chosen = list(range(len(index)))
        else:
            missing = [c for c in clip_ids if c not in index]
            if missing:
                raise UserError(
                    f"{store.url}: stream {info.alias} lacks {len(missing)} clip(s), "
                    f"e.g. {missing[0]!r}"
                )
            chosen = [index.position[c] for c in clip_ids]
        lengths = index.n_rows[chosen].astype(np.int64)
        offsets = np.cumsum(lengths) - lengths
        total = int(lengths.sum())
        shape = (total, info.dim)
        cache_path = None
        if cache_dir is not None:
            tag = fingerprint([info.key, index.parts, [index.clip_ids[i] for i in chosen]])
            cache_path = os.path.join(cache_dir, f"{info.key}-{tag}.npy")
            if os.path.exists(cache_path):
                data = np.load(cache_path, mmap_mode="r")
                return cls(info, data, [index.clip_ids[i] for i in chosen], offsets, lengths,
                           index.t0[chosen])
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{cache_path}.tmp-{os.getpid()}"
            data = np.lib.format.open_memmap(tmp, mode="w+", dtype=info.dtype, shape=shape)
        else:
            data = np.empty(shape, dtype=info.dtype)
        # Read each part once, whole, then place its clips.
        by_part: dict[str, list[tuple[int, int]]] = {}
        for out_i, i in enumerate(chosen):
            by_part.setdefault(index.part_of[i], []).append((out_i, i))
        for part, items in by_part.items():
            # Only the rows the index serves: an array whose metadata claims more (damage, or
            # a tampered zarr.json claiming 2^40 rows) costs no more than an intact one.
            needed = max(int(index.row_start[i]) + int(index.n_rows[i]) for _, i in items)
            reader = store._reader(info.key, part)
            if reader.shape[0] < needed or reader.shape[1] != info.dim:
                raise UserError(f"{getattr(reader, 'location', part)}: array of shape "
                                f"{tuple(reader.shape)} cannot hold the {needed} rows of "
                                f"dim {info.dim} its manifest lists; `affect store verify` "
                                "lists the damage")
            block = reader.read(0, needed)
            for out_i, i in items:
                start, n = int(index.row_start[i]), int(lengths[out_i])
                data[offsets[out_i] : offsets[out_i] + n] = block[start : start + n]
        if cache_path is not None:
            data.flush()
            del data
            os.replace(tmp, cache_path)
            data = np.load(cache_path, mmap_mode="r")
        return cls(info, data, [index.clip_ids[i] for i in chosen], offsets, lengths,
                   index.t0[chosen])

    def __len__(self) -> int:
        return len(self.clip_ids)

    def index_of(self, clip_id: str) -> int:
        return self._position[clip_id]

    def clip(self, clip_id: str) -> np.ndarray:
        i = self._position[clip_id]
        return self.data[self.offsets[i] : self.offsets[i] + self.lengths[i]]

    def _rows(self, clip_index: np.ndarray, starts: np.ndarray, length: int):
        clip_index = np.asarray(clip_index, dtype=np.int64)
        frame = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(length)[None, :]
        valid = (frame >= 0) & (frame < self.lengths[clip_index][:, None])
        rows = self.offsets[clip_index][:, None] + np.clip(
            frame, 0, np.maximum(self.lengths[clip_index] - 1, 0)[:, None]
        )
        return rows, valid

    def windows(self, clip_index: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """`[B, length, D]` windows in one gather; rows past a clip's end are zeros."""
        rows, valid = self._rows(clip_index, starts, length)
        if len(self.data) == 0:
            return np.zeros((*rows.shape, self.info.dim), dtype=self.data.dtype)
        out = self.data[rows.clip(0, len(self.data) - 1)]
        out[~valid] = 0
        return out

    def window_mask(self, clip_index: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        return self._rows(clip_index, starts, length)[1]
