"""Training reads from a store on S3: cold (first run), warm (later runs) and local, in windows/s.

Starts moto's S3 API on 127.0.0.1 (the same server the tests use, tests/servers.py), writes one
store of `--clips` clips of 500 to 1,000 frames x D float16 both to a local folder and to a bucket,
then times what a training run does: open the store, `load_stream` the whole stream, draw
`--batches` batches of 128 random 64-frame windows. Throughput = windows drawn / wall time of all
of it, so the one-time fetch is charged to the run that pays it:

- local store (zarr on this disk);
- S3, cold: an empty local part cache, every part fetched once over HTTP;
- S3, warm: a second run with the cache filled (no feature part fetched; metadata only);
- S3 without the cache (`AFFECT_CACHE_DIR=off`), windows read straight from the bucket with
  `read_windows`, a few batches only: what the cache saves.

GET requests for feature parts are counted on the server. Prints a markdown table; every number
comes from one run, so ratios hold on a shared machine.

    .venv/bin/python bench/store_s3.py            # 100 clips, D = 512
    .venv/bin/python bench/store_s3.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from features_store import StreamInfo, open_store  # noqa: E402


@dataclass
class Config:
    clips: int = 100
    dim: int = 512
    min_frames: int = 500
    max_frames: int = 1000
    window: int = 64
    batch: int = 128
    batches: int = 300
    direct_batches: int = 5
    clips_per_part: int = 25
    seed: int = 0


def write_store(url: str, cfg: Config) -> np.ndarray:
    rng = np.random.default_rng(cfg.seed)
    lengths = rng.integers(cfg.min_frames, cfg.max_frames + 1, size=cfg.clips)
    store = open_store(url)
    info = store.create_stream(StreamInfo(name="bench", dim=cfg.dim, dtype="float16",
                                          frame_shift_s=0.04))
    for p, lo in enumerate(range(0, cfg.clips, cfg.clips_per_part)):
        with store.part_writer(info, f"p{p:04d}") as writer:
            for i in range(lo, min(lo + cfg.clips_per_part, cfg.clips)):
                rows = rng.standard_normal((int(lengths[i]), cfg.dim), dtype=np.float32)
                writer.write_clip(f"clip{i:05d}", rows.astype(np.float16))
    store.finalize()
    return lengths


def batches_for(cfg: Config, lengths: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(cfg.seed + 1)
    out = []
    for _ in range(n):
        ci = rng.integers(0, len(lengths), size=cfg.batch)
        out.append((ci, rng.integers(0, lengths[ci] - cfg.window + 1)))
    return out


def training_run(url: str, cfg: Config, batches) -> float:
    """Windows/s of one run: open, load the stream (fetching what it must), draw batches."""
    start = time.perf_counter()
    array = open_store(url, mode="r").load_stream("bench")
    for ci, starts in batches:
        array.windows(ci, starts, cfg.window)
    return len(batches) * cfg.batch / (time.perf_counter() - start)


def direct_run(url: str, cfg: Config, batches) -> float:
    """Windows/s reading each batch straight from the store (no one-time copy)."""
    store = open_store(url, mode="r")
    ids = store.index("bench").clip_ids
    start = time.perf_counter()
    for ci, starts in batches:
        store.read_windows("bench", [(ids[c], int(s), cfg.window) for c, s in zip(ci, starts)])
    return len(batches) * cfg.batch / (time.perf_counter() - start)


def measure(cfg: Config) -> dict[str, dict[str, float]]:
    """{reader: {"windows_s": ..., "part_gets": ...}}; callable from other benchmarks."""
    from servers import S3Server

    results: dict[str, dict[str, float]] = {}
    root = tempfile.mkdtemp(prefix="affect-bench-s3-")
    saved = {k: os.environ.get(k) for k in ("AFFECT_CACHE_DIR", "AWS_ENDPOINT_URL",
                                            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    try:
        with S3Server() as server:
            os.environ.update(server.env)
            bucket = server.make_bucket()
            url = f"s3://{bucket}/bench.zarr"
            local = os.path.join(root, "bench.zarr")
            lengths = write_store(local, cfg)
            write_store(url, cfg)
            batches = batches_for(cfg, lengths, cfg.batches)
            parts = f"{bucket}/bench.zarr/streams/"

            def part_gets() -> int:
                return sum("/parts/" in p for _, p in server.requests("GET", parts))

            os.environ["AFFECT_CACHE_DIR"] = os.path.join(root, "cache")
            results["local store (zarr)"] = {"windows_s": training_run(local, cfg, batches),
                                             "part_gets": 0}
            for name in ("S3, cold (empty local cache)", "S3, warm (cache filled)"):
                server.reset_counts()
                rate = training_run(url, cfg, batches)
                results[name] = {"windows_s": rate, "part_gets": part_gets()}
            os.environ["AFFECT_CACHE_DIR"] = "off"
            server.reset_counts()
            few = batches[: cfg.direct_batches]
            results["S3, no cache: read_windows per batch"] = {
                "windows_s": direct_run(url, cfg, few), "part_gets": part_gets()}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=Config.clips)
    parser.add_argument("--dim", type=int, default=Config.dim)
    parser.add_argument("--batches", type=int, default=Config.batches)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cfg = Config(clips=args.clips, dim=args.dim, batches=args.batches)
    if args.quick:
        cfg = Config(clips=20, dim=64, batches=20, direct_batches=2, clips_per_part=5)
    mb = sum(range(cfg.min_frames, cfg.max_frames + 1)) / (cfg.max_frames - cfg.min_frames + 1)
    mb *= cfg.clips * cfg.dim * 2 / 1e6
    results = measure(cfg)
    base = results["local store (zarr)"]["windows_s"]
    print(f"{cfg.clips} clips x D={cfg.dim} float16 (~{mb:.0f} MB), {cfg.batches} batches of "
          f"{cfg.batch} x {cfg.window}-frame windows per run\n")
    print("| reader | windows/s | vs local | GETs of feature parts |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['windows_s']:,.0f} | {r['windows_s'] / base:.2f}x | "
              f"{r['part_gets']:.0f} |")


if __name__ == "__main__":
    main()
