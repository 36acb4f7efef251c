"""Scale-out benchmark (issue 8): extraction wall time without a scheduler, on `local:1` and on
`local:2`, measured in one run on the same clips (each into a fresh store). Prints a markdown
table for BENCHMARKS.md. The cluster times include starting the cluster and its workers'
first encoder builds: that is what a user pays.

Reduced encoders with random weights on CPU; the target is local:1 within 1.1x of no scheduler.
The S3 read throughput numbers are bench/store_s3.py's (issue 8, store half), when present.

    .venv/bin/python bench/scale.py [--clips 24] [--seconds 4] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.extract import make_videos  # noqa: E402
from extract.dask_runner import run_extraction_dask  # noqa: E402
from extract.runner import ExtractOptions, run_extraction  # noqa: E402
from features_store import open_store  # noqa: E402

ENCODERS = ["hsemotion-enet-b0", "vggish"]


def options() -> ExtractOptions:
    return ExtractOptions(encoders=ENCODERS, weights="random", reduced=True, device="cpu",
                          batch_size=32, clips_per_part=4, decode_workers=2)


def run(mode: str, clips: list[dict], store: str) -> float:
    started = time.perf_counter()
    if mode == "none":
        report = run_extraction(clips, open_store(store), options(), progress=False)
    else:
        report = run_extraction_dask(clips, store, options(), mode, progress=False)
    seconds = time.perf_counter() - started
    assert report.done == len(clips) and report.failed == 0, report
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clips = make_videos(os.path.join(tmp, "media"), args.clips, args.seconds, (128, 128),
                            audio=True)
        modes = ["none", "local:1", "local:2"]
        times: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(args.rounds):  # interleaved, so a busy moment hits every mode alike
            for mode in modes:
                times[mode].append(run(mode, clips, os.path.join(tmp, f"{mode}-{r}.zarr")))
    best = {m: min(ts) for m, ts in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"no GPU; {args.clips} clips x {args.seconds:.0f} s (128x128, 25 fps, with audio), "
          f"encoders {', '.join(ENCODERS)} (reduced, random), clips-per-part 4")
    print()
    print("| scheduler | wall s | / no scheduler |")
    print("|---|---|---|")
    for mode in modes:
        print(f"| {mode} | {best[mode]:.1f} | {best[mode] / best['none']:.2f} |")


if __name__ == "__main__":
    main()
