"""A store in the tools researchers already use: pandas, xarray and Hugging Face `datasets`.

Each library is optional (the `interop` extra) and imported only by the function that needs it;
a missing one is a one-line error naming the package to install. Nothing here writes the store.

- `clips_frame`: the clip table as a DataFrame indexed by clip id.
- `stream_to_xarray`: a stream's ragged clips as one Dataset: the rows of every clip end to end
  along `row`, with `clip_id` and `time_s` coordinates on that dimension, so
  `ds.where(ds.clip_id == c, drop=True)` or `ds.groupby("clip_id")` gives a clip back.
- `export_hf`: one record per clip (clip id, split, speaker, times, the [T, D] rows), saved
  with `datasets.Dataset.save_to_disk`, read back with `datasets.load_from_disk`.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    from .store import FeatureStore

EXTRA = "interop"


def require(module: str, package: str | None = None) -> Any:
    """Import an optional library, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this needs the {package or module} package: pip install "
                        f"{package or module} (or pip install 'affect[{EXTRA}]')") from None


def clips_frame(store: FeatureStore, split: str | None = None) -> Any:
    """The clip table (one row per clip, indexed by clip_id) as a pandas DataFrame."""
    pandas = require("pandas")
    records = store.clips(split)
    frame = pandas.DataFrame.from_records(records, columns=_columns(records))
    return frame.set_index("clip_id")


def _columns(records: list[dict[str, Any]]) -> list[str]:
    """clip_id, split, speaker first (where any record has them), then every other field in
    the order the records first show it."""
    seen = dict.fromkeys(["clip_id", "split", "speaker"])
    for record in records:
        seen.update(dict.fromkeys(record))
    present = {key for record in records for key in record} | {"clip_id"}
    return [key for key in seen if key in present]


def _times(store: FeatureStore, stream: str, clip_ids: Sequence[str]) -> Iterator[np.ndarray]:
    """Each clip's row times in seconds: t0 + i * its frame shift (t0 for a per-clip row)."""
    info = store.resolve(stream)
    index = store.index(info)
    for clip_id in clip_ids:
        i = index.position[clip_id]
        n, t0 = int(index.n_rows[i]), float(index.t0[i])
        shift = store.clip_frame_shift(info, index, i)
        yield t0 + np.arange(n) * (shift or 0.0)


def stream_to_xarray(store: FeatureStore, stream: str,
                     clip_ids: Sequence[str] | None = None) -> Any:
    """A stream as an xarray Dataset: `features` [row, feature] with `clip_id` and `time_s` on rows,
    the clip table's split and speaker per row where it has them, provenance in `attrs`."""
    xarray = require("xarray")
    info = store.resolve(stream)
    array = store.load_stream(info, clip_ids)
    clips = list(array.clip_ids)
    lengths = np.asarray(array.lengths, dtype=np.int64)
    times = list(_times(store, info.key, clips))
    coords: dict[str, Any] = {
        # not `clip`: Dataset.clip is a method, so `ds.clip == c` would not select anything
        "clip_id": ("row", np.repeat(np.array(clips, dtype=object), lengths)),
        "time_s": ("row", np.concatenate(times) if times else np.zeros(0)),
    }
    table = {c["clip_id"]: c for c in store.clips()}
    for field in ("split", "speaker"):
        if any(field in table.get(c, {}) for c in clips):
            values = [str(table.get(c, {}).get(field, "")) for c in clips]
            coords[field] = ("row", np.repeat(np.array(values, dtype=object), lengths))
    attrs = {"stream": info.alias, "key": info.key, "kind": info.kind,
             "frame_shift_s": "per-clip" if info.frame_shift_s is None else info.frame_shift_s,
             "weights": str(info.weights), "store": store.url}
    return xarray.Dataset({"features": (("row", "feature"), np.asarray(array.data))},
                          coords=coords, attrs=attrs)


def export_hf(store: FeatureStore, stream: str, out_dir: str, dtype: str | None = None,
              progress: Callable[[int], None] | None = None) -> int:
    """Save the stream as a Hugging Face dataset at `out_dir` (one record per clip); returns the
    number of clips. `datasets.load_from_disk(out_dir).with_format("torch")` gives tensors."""
    datasets = require("datasets")
    info = store.resolve(stream)
    array = store.load_stream(info)
    table = {c["clip_id"]: c for c in store.clips()}
    value_type = np.dtype(dtype or info.dtype).name
    features = datasets.Features({
        "clip_id": datasets.Value("string"),
        "split": datasets.Value("string"),
        "speaker": datasets.Value("string"),
        "t0": datasets.Value("float64"),
        "time_s": datasets.Sequence(datasets.Value("float64")),
        "features": datasets.Array2D(shape=(None, info.dim), dtype=value_type),
    })
    times = dict(zip(array.clip_ids, _times(store, info.key, array.clip_ids)))

    def records() -> Iterator[dict[str, Any]]:
        for clip_id in array.clip_ids:
            row = table.get(clip_id, {})
            yield {"clip_id": clip_id, "split": str(row.get("split", "")),
                   "speaker": str(row.get("speaker", "")),
                   "t0": float(times[clip_id][0]) if len(times[clip_id]) else 0.0,
                   "time_s": times[clip_id].tolist(),
                   "features": np.asarray(array.clip(clip_id), dtype=value_type)}
            if progress:
                progress(1)

    # The Arrow files written while generating go to a scratch folder, not the user's datasets
    # cache: save_to_disk copies them to out_dir, which then stands alone.
    with tempfile.TemporaryDirectory(prefix="affect-hf-") as scratch:
        dataset = datasets.Dataset.from_generator(records, features=features, cache_dir=scratch)
        dataset.info.description = (f"affect stream {info.alias} ({info.key}) from "
                                    f"{store.url}; weights {info.weights}")
        dataset.save_to_disk(out_dir)
    return len(array.clip_ids)
