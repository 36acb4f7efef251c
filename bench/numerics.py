"""What the stream key's fixed numerics cost on CPU (issue 17, items 3-4).

Every CPU forward runs with a fixed number of intra-op threads (`--threads`, default 1) and
every video forward has exactly `--batch-size` frames (a short tail batch is padded). This
measures, in one run on the same clips (interleaved rounds, best of each):

- wall and model seconds with `--threads 1` (the default) and `--threads 2` (what a plain run
  used before on this 2-core machine), each into a fresh store;
- the padding: frames computed for filler over frames kept, at `--clips-per-part` 4 (a tail
  batch per task and stream), from the run's own counts.

    .venv/bin/python bench/numerics.py [--clips 16] [--seconds 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.extract import make_videos  # noqa: E402
from extract.runner import ExtractOptions, run_extraction  # noqa: E402
from features_store import open_store  # noqa: E402

ENCODERS = ["hsemotion-enet-b0", "wav2vec2-base"]
BATCH = 32
CLIPS_PER_PART = 4


def run(clips: list[dict], store: str, threads: int) -> tuple[float, float]:
    options = ExtractOptions(encoders=ENCODERS, weights="random", reduced=True, device="cpu",
                             batch_size=BATCH, clips_per_part=CLIPS_PER_PART, threads=threads,
                             decode_workers=1)
    started = time.perf_counter()
    report = run_extraction(clips, open_store(store), options, progress=False)
    seconds = time.perf_counter() - started
    assert report.done == len(clips) and report.failed == 0, report
    return seconds, sum(s.model_s for s in report.streams.values())


def padding_fraction(store: str, encoder: str) -> float:
    """Filler frames computed / frames kept, for the video stream (one tail per part)."""
    s = open_store(store, mode="r")
    info = s.resolve(encoder)
    kept = padded = 0
    for manifest in s.manifests(info):
        kept += manifest.n_rows
        padded += math.ceil(manifest.n_rows / BATCH) * BATCH - manifest.n_rows
    return padded / kept


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        clips = make_videos(os.path.join(tmp, "media"), args.clips, args.seconds, (96, 96),
                            audio=True)
        for r in range(args.rounds):  # interleaved: a busy moment hits both alike
            for threads in (1, 2):
                times[threads].append(run(clips, os.path.join(tmp, f"t{threads}-{r}.zarr"),
                                          threads))
        padding = padding_fraction(os.path.join(tmp, "t1-0.zarr"), ENCODERS[0])
    best = {t: (min(w for w, _ in v), min(m for _, m in v)) for t, v in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"no GPU; {args.clips} clips x {args.seconds:g} s (96x96, 25 fps, with audio), "
          f"encoders {', '.join(ENCODERS)} (reduced, random), batch {BATCH}, clips-per-part "
          f"{CLIPS_PER_PART}, best of {args.rounds}")
    print()
    print("| threads | wall s | model s | wall / threads 2 | model / threads 2 |")
    print("|---|---|---|---|---|")
    for t in (1, 2):
        print(f"| {t} | {best[t][0]:.1f} | {best[t][1]:.1f} | {best[t][0] / best[2][0]:.2f} | "
              f"{best[t][1] / best[2][1]:.2f} |")
    print()
    print(f"padding of tail batches ({ENCODERS[0]}): {padding:.1%} extra frames computed")


if __name__ == "__main__":
    main()
