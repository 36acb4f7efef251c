"""How fast can a training loop draw random windows from the feature store?

Builds `--clips` clips of 500 to 1,000 frames x D float16 (as an extractor would write them)
and times random 64-frame windows in batches of 128, as a training loop reads them, from:

- our training reader: `store.load_stream(...)` once, then `StreamArray.windows` per batch
  (in RAM, and from the memmap cache), and `WindowDataset` item access (one item at a time);
- `store.read_windows` straight from the part arrays (no one-time copy);
- the ceiling: one raw `.npy` of all rows, memory-mapped, plus an offsets index;
- the REACT baseline's way: one `.pth` per clip, `torch.load` then slice;
- one HDF5 dataset per clip (h5py), slicing the window.

It also times writing: our part writer (zarr with default settings, hdf5) against `np.save` of
the same rows (one file of all rows, and one file per clip). Every number comes from one run so
ratios hold on a shared machine; each reader is timed best-of `--rounds` after its files were
read once (the page cache of a second epoch). Prints markdown tables.

    .venv/bin/python bench/store_read.py                 # 1,000 clips, D = 512 and 768
    .venv/bin/python bench/store_read.py --quick         # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from features_store import StreamInfo, open_store  # noqa: E402
from features_store.torch_data import WindowDataset  # noqa: E402

Batch = tuple[np.ndarray, np.ndarray]  # (clip index [B], start frame [B])
NPY_ONE = "np.save, one file of all rows"


@dataclass
class Config:
    clips: int = 1000
    dims: list[int] = field(default_factory=lambda: [512, 768])
    min_frames: int = 500
    max_frames: int = 1000
    window: int = 64
    batch: int = 128
    clips_per_part: int = 100
    seconds: float = 1.5  # minimum timed seconds per reader per round
    rounds: int = 3
    seed: int = 0


def make_clips(cfg: Config, dim: int) -> list[np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    lengths = rng.integers(cfg.min_frames, cfg.max_frames + 1, size=cfg.clips)
    return [rng.standard_normal((int(n), dim), dtype=np.float32).astype(np.float16)
            for n in lengths]


def clip_name(i: int) -> str:
    return f"clip{i:06d}"


def make_batches(cfg: Config, lengths: np.ndarray, n: int) -> list[Batch]:
    rng = np.random.default_rng(cfg.seed + 1)
    out = []
    for _ in range(n):
        ci = rng.integers(0, len(lengths), size=cfg.batch)
        starts = rng.integers(0, lengths[ci] - cfg.window + 1)
        out.append((ci, starts))
    return out


def sync() -> None:
    """Flush dirty pages so that one writer's backlog is not charged to the next."""
    if hasattr(os, "sync"):
        os.sync()


def read_all_files(path: str) -> None:
    """Read every byte under `path` once: the page cache a second training epoch sees."""
    files = [path] if os.path.isfile(path) else [
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names
    ]
    for file in files:
        with open(file, "rb") as f:
            while f.read(1 << 24):
                pass


def best_rate(fn: Callable[[Batch], object], batches: list[Batch], cfg: Config) -> float:
    """Windows per second over at least `cfg.seconds` of batches."""
    fn(batches[0])  # first call opens handles; not a training-loop cost
    done, start = 0, time.perf_counter()
    while True:
        fn(batches[done % len(batches)])
        done += 1
        elapsed = time.perf_counter() - start
        if elapsed >= cfg.seconds and done >= 3:
            return done * cfg.batch / elapsed


# Writers -----------------------------------------------------------------------------------


def write_npy_per_clip(clips: list[np.ndarray], folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, rows in enumerate(clips):
        np.save(os.path.join(folder, f"{clip_name(i)}.npy"), rows)


def write_store(clips: list[np.ndarray], url: str, cfg: Config) -> None:
    store = open_store(url)
    info = store.create_stream(
        StreamInfo(name="bench", dim=clips[0].shape[1], dtype="float16", frame_shift_s=0.04)
    )
    for p, lo in enumerate(range(0, len(clips), cfg.clips_per_part)):
        with store.part_writer(info, f"p{p:04d}") as writer:
            for i in range(lo, min(lo + cfg.clips_per_part, len(clips))):
                writer.write_clip(clip_name(i), clips[i])
    store.add_clips({"clip_id": clip_name(i), "split": "train"} for i in range(len(clips)))
    store.finalize()


def time_writes(
    clips: list[np.ndarray], root: str, cfg: Config
) -> tuple[dict[str, float], dict[str, float]]:
    """MB/s of each writer into the page cache, and durable (until `sync` returns).

    Best of `cfg.rounds` interleaved rounds. The page-cache figure is what a short job sees;
    the durable one is what a long extraction sustains once its output outgrows RAM.
    """
    mb = sum(c.nbytes for c in clips) / 1e6
    flat = np.concatenate(clips)  # the raw ceiling writes rows already in one array
    writers = {
        NPY_ONE: lambda out: np.save(out + ".npy", flat),
        "np.save, one file per clip": lambda out: write_npy_per_clip(clips, out),
        "ours: part writer, zarr (default)": lambda out: write_store(clips, out + ".zarr", cfg),
        "ours: part writer, hdf5": lambda out: write_store(clips, out + ".h5", cfg),
    }
    cached: dict[str, float] = {}
    durable: dict[str, float] = {}
    for round_no in range(cfg.rounds):
        for name, write in writers.items():
            out = os.path.join(root, f"write-{round_no}")
            sync()
            start = time.perf_counter()
            write(out)
            written = time.perf_counter()
            sync()
            synced = time.perf_counter()
            cached[name] = max(cached.get(name, 0.0), mb / (written - start))
            durable[name] = max(durable.get(name, 0.0), mb / (synced - start))
            for path in (out, out + ".npy", out + ".zarr", out + ".h5"):
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
    return cached, durable


# Readers -----------------------------------------------------------------------------------


def build_readers(
    clips: list[np.ndarray], root: str, cfg: Config, timings: dict[str, float]
) -> dict[str, Callable[[Batch], object]]:
    window = cfg.window
    lengths = np.array([len(c) for c in clips])
    url = os.path.join(root, "store.zarr")
    write_store(clips, url, cfg)
    write_store(clips, os.path.join(root, "store.h5"), cfg)

    # The one-time copy of the training reader, timed on its own.
    store = open_store(url, mode="r")
    read_all_files(url)
    start = time.perf_counter()
    in_ram = store.load_stream("bench")
    timings["load_stream (zarr -> RAM)"] = time.perf_counter() - start
    h5_store = open_store(os.path.join(root, "store.h5"), mode="r")
    read_all_files(h5_store.url)
    start = time.perf_counter()
    h5_store.load_stream("bench")
    timings["load_stream (hdf5 -> RAM)"] = time.perf_counter() - start
    cache = os.path.join(root, "cache")
    start = time.perf_counter()
    open_store(url, mode="r").load_stream("bench", cache_dir=cache)
    timings["load_stream (zarr -> memmap cache, first run)"] = time.perf_counter() - start
    start = time.perf_counter()
    cached = open_store(url, mode="r").load_stream("bench", cache_dir=cache)
    timings["load_stream (memmap cache, later runs)"] = time.perf_counter() - start
    assert in_ram.clip_ids == [clip_name(i) for i in range(len(clips))]

    def ours(batch: Batch) -> np.ndarray:
        return in_ram.windows(batch[0], batch[1], window)

    def ours_cached(batch: Batch) -> np.ndarray:
        return cached.windows(batch[0], batch[1], window)

    dataset = WindowDataset(url, ["bench"], window=window, stride=window // 2)
    dataset[0]  # the dataset's own one-time load_stream
    item_of = {(ci, s): k for k, (ci, s) in enumerate(dataset.items)}
    stride = dataset.stride

    def ours_dataset(batch: Batch) -> torch.Tensor:
        # Items are fixed windows every `stride` frames: take the item at or before each start.
        items = [item_of[(int(c), int(s) // stride * stride)] for c, s in zip(*batch)]
        return torch.stack([dataset[k]["bench"] for k in items])

    def ours_read_windows(batch: Batch) -> np.ndarray:
        windows = [(clip_name(int(c)), int(s), window) for c, s in zip(*batch)]
        return store.read_windows("bench", windows)[0]

    flat_path = os.path.join(root, "flat.npy")
    np.save(flat_path, np.concatenate(clips))
    flat = np.load(flat_path, mmap_mode="r")
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    steps = np.arange(window)

    def memmap(batch: Batch) -> np.ndarray:
        rows = (offsets[batch[0]] + batch[1])[:, None] + steps[None, :]
        return flat[rows]

    pth_dir = os.path.join(root, "pth")
    os.makedirs(pth_dir)
    for i, rows in enumerate(clips):
        torch.save(torch.from_numpy(rows), os.path.join(pth_dir, f"{clip_name(i)}.pth"))

    def pth(batch: Batch) -> torch.Tensor:
        out = []
        for c, s in zip(*batch):
            clip = torch.load(os.path.join(pth_dir, f"{clip_name(int(c))}.pth"), weights_only=True)
            out.append(clip[int(s) : int(s) + window])
        return torch.stack(out)

    h5_path = os.path.join(root, "per_clip.h5")
    with h5py.File(h5_path, "w") as f:
        for i, rows in enumerate(clips):
            f.create_dataset(clip_name(i), data=rows)
    h5_file = h5py.File(h5_path, "r")
    h5_sets = [h5_file[clip_name(i)] for i in range(len(clips))]

    def h5_per_clip(batch: Batch) -> np.ndarray:
        return np.stack([h5_sets[int(c)][int(s) : int(s) + window] for c, s in zip(*batch)])

    for path in (flat_path, pth_dir, h5_path, cache):
        read_all_files(path)

    # Every reader must return the same windows (the .pth path and WindowDataset aside: they
    # return tensors, the dataset snaps starts to its stride and casts to float32).
    probe = make_batches(cfg, lengths, 1)[0]
    reference = memmap(probe)
    assert np.array_equal(ours(probe), reference)
    assert np.array_equal(ours_cached(probe), reference)
    assert np.array_equal(ours_read_windows(probe), reference)
    assert np.array_equal(pth(probe).numpy(), reference)
    assert np.array_equal(h5_per_clip(probe), reference)
    return {
        "ours: load_stream().windows (RAM)": ours,
        "ours: load_stream(cache_dir).windows (memmap)": ours_cached,
        "ours: WindowDataset[i] x 128 + stack": ours_dataset,
        "ours: store.read_windows (no copy, zarr)": ours_read_windows,
        "ceiling: raw .npy memmap + offsets": memmap,
        "REACT baseline: torch.load .pth per clip, slice": pth,
        "h5py: one dataset per clip, slice": h5_per_clip,
    }


def run_dim(cfg: Config, dim: int, root: str) -> dict:
    clips = make_clips(cfg, dim)
    lengths = np.array([len(c) for c in clips])
    gb = sum(c.nbytes for c in clips) / 1e9
    print(f"D={dim}: {cfg.clips} clips, {int(lengths.sum())} rows, {gb:.2f} GB", file=sys.stderr)
    writes, durable = time_writes(clips, root, cfg)
    timings: dict[str, float] = {}
    readers = build_readers(clips, root, cfg, timings)
    del clips
    batches = make_batches(cfg, lengths, 64)
    rates: dict[str, float] = {}
    for _ in range(cfg.rounds):  # interleaved rounds: a busy moment hits every reader alike
        for name, fn in readers.items():
            rates[name] = max(rates.get(name, 0.0), best_rate(fn, batches, cfg))
    return {"dim": dim, "rows": int(lengths.sum()), "gb": gb, "reads": rates,
            "writes": writes, "writes_durable": durable, "load": timings}


def markdown(result: dict, cfg: Config) -> str:
    reads, writes = result["reads"], result["writes"]
    ceiling = reads["ceiling: raw .npy memmap + offsets"]
    react = reads["REACT baseline: torch.load .pth per clip, slice"]
    lines = [
        f"### D = {result['dim']}: {cfg.clips} clips, {result['rows']:,} rows float16 "
        f"({result['gb']:.2f} GB); random {cfg.window}-frame windows, batches of {cfg.batch}",
        "",
        "| reader | windows/s | x memmap | x .pth per clip |",
        "|---|---:|---:|---:|",
    ]
    for name, rate in reads.items():
        lines.append(f"| {name} | {rate:,.0f} | {rate / ceiling:.2f} | {rate / react:.1f} |")
    durable = result["writes_durable"]
    lines += [
        "",
        "| writer | MB/s to page cache | x np.save one file | MB/s durable (to sync) "
        "| x np.save one file |",
        "|---|---:|---:|---:|---:|",
    ]
    one_file, one_file_durable = writes[NPY_ONE], durable[NPY_ONE]
    for name, rate in writes.items():
        lines.append(
            f"| {name} | {rate:,.0f} | {rate / one_file:.2f} | {durable[name]:,.0f} "
            f"| {durable[name] / one_file_durable:.2f} |"
        )
    lines += ["", "| one-time load | seconds |", "|---|---:|"]
    for name, seconds in result["load"].items():
        lines.append(f"| {name} | {seconds:.2f} |")
    ours = reads["ours: load_stream().windows (RAM)"]

    def verdict(ratio: float, target: float) -> str:
        return f"{ratio:.2f}x ({'met' if ratio >= target else 'MISSED'})"

    zarr_name = "ours: part writer, zarr (default)"
    lines += [
        "",
        f"Targets: reader >= 0.5x memmap: {verdict(ours / ceiling, 0.5)}; reader >= 10x .pth: "
        f"{verdict(ours / react, 10)}; zarr writer >= 0.5x np.save one file: "
        f"{verdict(writes[zarr_name] / one_file, 0.5)} to page cache, "
        f"{verdict(durable[zarr_name] / one_file_durable, 0.5)} durable.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--dim", type=int, nargs="+", default=[512, 768])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--quick", action="store_true", help="Smoke run: 40 clips, D = 64.")
    parser.add_argument("--tmp", default=None, help="Folder for the data (default: system temp).")
    parser.add_argument("--json", default=None, help="Also write the numbers to this file.")
    args = parser.parse_args(argv)
    cfg = Config(clips=args.clips, dims=args.dim, rounds=args.rounds, seconds=args.seconds)
    if args.quick:
        cfg = Config(clips=40, dims=[64], rounds=1, seconds=0.1, clips_per_part=10)
    torch.set_num_threads(1)  # the machine is shared; readers are single-threaded anyway
    results = []
    for dim in cfg.dims:
        root = tempfile.mkdtemp(prefix=f"affect-bench-{dim}-", dir=args.tmp)
        try:
            results.append(run_dim(cfg, dim, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(markdown(results[-1], cfg), end="\n\n", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
