"""`affect live` throughput and latency: a trm run on a file, as fast as possible and paced.

Builds a trm run the way the tests do (the CREMA-D sample, audio REACT VGGish + HSEmotion +
EmbeddingGemma with random weights, one epoch), then plays a new 30 fps clip to `affect live`:
as fast as possible (sustained frames per second of the whole pipeline: decode, encoders, the
head; the real-time factor at 25 and 30 fps is that rate over 25 and 30) and paced at its own
rate (`--realtime`: latency p50/p95 and drops when frames arrive as from a camera).

    python bench/live.py [--full] [--threads N] [--seconds S] [--work DIR]

--full: the encoders' real architecture sizes (random weights) and trm's paper size
(hidden 512); default: reduced encoders and hidden 32.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_run(root: Path, full: bool) -> None:
    from click.testing import CliRunner

    from pipelines.cli import cli
    from pipelines.samples import generate_sample

    def affect(*args: str) -> None:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output[-2000:]

    os.chdir(root)
    generate_sample("cremad", root / "data", seed=0, size=32, clips=12, seconds=0.8)
    reduced = [] if full else ["--reduced"]
    affect("extract", "--dataset", "cremad", "--data-root", "data", "--store", "s.zarr",
           "--encoders", "vggish-react,hsemotion-enet-b0,embeddinggemma", "--weights",
           "random", *reduced, "--device", "cpu")
    size = [] if full else ["--set", "hidden=32", "--set", "heads=4"]
    affect("train", "--head", "trm", "--store", "s.zarr", "--out", "run", "--device", "cpu",
           "--quiet", "--epochs", "1", "--set", "profile=fixed", "--set", "audio=vggish-react",
           *size,
           "--set", "batch_size=4")


def clip(path: Path, seconds: float) -> None:
    import numpy as np

    from pipelines.synthetic.av_writer import write_video

    rng = np.random.default_rng(11)
    texture = rng.integers(0, 256, size=(480, 680, 3), dtype=np.uint8)
    n = int(seconds * 30)
    t = np.arange(int(seconds * 16000)) / 16000
    write_video(path, (np.roll(texture, 4 * k, axis=1)[:360, :640] for k in range(n)), fps=30,
                audio=(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def measure(source: Path, realtime: bool) -> dict:
    from pipelines.live import live

    out = io.StringIO()
    started = time.perf_counter()
    summary = live("run", str(source), realtime=realtime, text="Don't forget a jacket.",
                   out=out)
    wall = time.perf_counter() - started
    fps = summary["frames"] / max(1e-9, summary["media_s"] / max(summary["realtime_factor"],
                                                                  1e-9))
    return {**summary, "wall_s": round(wall, 2), "frames_per_s": round(fps, 1),
            "rtf_at_25": round(fps / 25, 2), "rtf_at_30": round(fps / 30, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.work or tempfile.mkdtemp(prefix="bench-live-"))
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "run" / "config.json").exists():
        build_run(root, args.full)
    os.chdir(root)
    source = root / "clip.mp4"
    if not source.exists():
        clip(source, args.seconds)
    result = {"machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads "
                         f"{args.threads}", "sizes": "full" if args.full else "reduced",
              "fast": measure(source, realtime=False),
              "paced": measure(source, realtime=True)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
