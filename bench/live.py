"""`affect live` throughput and latency: a head's run on a file, as fast as possible and paced.

Builds a run of `--head` the way the tests do (the head's dataset sample, the recipe's encoders
with random weights, one epoch; trm: the CREMA-D sample, audio REACT VGGish + HSEmotion +
EmbeddingGemma), then plays a new 30 fps clip to `affect live`: as fast as possible (sustained
frames per second of the whole pipeline: decode, encoders, the head; the real-time factor at 25
and 30 fps is that rate over 25 and 30) and paced at its own rate (`--realtime`: latency p50/p95
and drops when frames arrive as from a camera). A windowed head runs with its default window
and hop (the header line, in the output).

    python bench/live.py [--head NAME] [--full] [--threads N] [--seconds S] [--work DIR]

--head: any head `affect live` runs (pipelines.live.steppers.STEPPERS; default trm).
--full: the encoders' real architecture sizes (random weights) and trm's paper size
(hidden 512); default: reduced encoders and hidden 32.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SENTENCE = "Don't forget a jacket."


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the benchmark's run of a head is made (as tests/test_predict_media_heads.py)."""

    dataset: str
    encoders: str
    sample: dict
    sets: tuple[str, ...]
    reduced_sets: tuple[str, ...] = ()  # only without --full


RECIPES = {
    "trm": Recipe("cremad", "vggish-react,hsemotion-enet-b0,embeddinggemma",
                  {"clips": 12, "seconds": 0.8},
                  ("profile=fixed", "audio=vggish-react", "batch_size=4"),
                  ("hidden=32", "heads=4")),
    "temporal_attention": Recipe("raer", "clip-vit-b16@rapt@face,clip-vit-b16@rapt@body",
                                 {"clips": 10, "seconds": 1}, ("batch_size=4",)),
    "tpn_awm": Recipe("iemocap", "wav2vec2-base,clip-vit-b16", {"clips": 12, "seconds": 1},
                      ("batch_size=4",), ("shared_dim=16",)),
    "regnn": Recipe("react", "swin-t,vggish-react", {"clips": 8, "seconds": 4},
                    ("iterations_per_epoch=2", "batch_size=4"),
                    ("cross_layers=1", "self_layers=1", "n_samples=2")),
}


def recipe_for(head: str) -> Recipe:
    """The head's recipe above, else its default dataset's recipe (encoders) on a small sample:
    any head `affect live` runs can be measured."""
    from heads.registry import get_head
    from pipelines.datasets import get_adapter
    from pipelines.live.steppers import STEPPERS

    if head not in STEPPERS:
        raise SystemExit(f"head {head} does not run live; live runs: {', '.join(STEPPERS)}")
    if head in RECIPES:
        return RECIPES[head]
    dataset = get_head(head).default_dataset
    return Recipe(dataset, ",".join(get_adapter(dataset).recipe.encoders),
                  {"clips": 12, "seconds": 2}, ("batch_size=4",))


def build_run(root: Path, head: str, full: bool) -> None:
    from click.testing import CliRunner

    from pipelines.cli import cli
    from pipelines.samples import generate_sample

    def affect(*args: str) -> None:
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output[-2000:]

    recipe = recipe_for(head)
    os.chdir(root)
    generate_sample(recipe.dataset, root / "data", seed=0, size=32, **recipe.sample)
    reduced = [] if full else ["--reduced"]
    affect("extract", "--dataset", recipe.dataset, "--data-root", "data", "--store", "s.zarr",
           "--encoders", recipe.encoders, "--weights", "random", *reduced, "--device", "cpu")
    sets = recipe.sets + (() if full else recipe.reduced_sets)
    affect("train", "--head", head, "--store", "s.zarr", "--out", "run", "--device", "cpu",
           "--quiet", "--epochs", "1", *(a for s in sets for a in ("--set", s)))


def clip(path: Path, seconds: float) -> None:
    import numpy as np

    from pipelines.synthetic.av_writer import write_video

    rng = np.random.default_rng(11)
    texture = rng.integers(0, 256, size=(480, 680, 3), dtype=np.uint8)
    n = int(seconds * 30)
    t = np.arange(int(seconds * 16000)) / 16000
    write_video(path, (np.roll(texture, 4 * k, axis=1)[:360, :640] for k in range(n)), fps=30,
                audio=(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


def measure(source: Path, realtime: bool, text: str | None) -> dict:
    from pipelines.live import live

    out = io.StringIO()
    started = time.perf_counter()
    summary = live("run", str(source), realtime=realtime, text=text, out=out)
    wall = time.perf_counter() - started
    fps = summary["frames"] / max(1e-9, summary["media_s"] / max(summary["realtime_factor"],
                                                                  1e-9))
    header = json.loads(out.getvalue().splitlines()[0])
    window = {k: header[k] for k in ("fps", "window_s", "hop_s") if k in header}
    return {**summary, **window, "wall_s": round(wall, 2), "frames_per_s": round(fps, 1),
            "rtf_at_25": round(fps / 25, 2), "rtf_at_30": round(fps / 30, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", default="trm", help="a head in STEPPERS (default trm)")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    recipe_for(args.head)  # an unknown head stops here, before any work
    root = Path(args.work or tempfile.mkdtemp(prefix="bench-live-"))
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "run" / "config.json").exists():
        build_run(root, args.head, args.full)
    os.chdir(root)
    source = root / "clip.mp4"
    if not source.exists():
        clip(source, args.seconds)
    text = SENTENCE if args.head == "trm" else None  # the trm run reads a text stream
    result = {"machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads "
                         f"{args.threads}", "head": args.head,
              "sizes": "full" if args.full else "reduced",
              "fast": measure(source, realtime=False, text=text),
              "paced": measure(source, realtime=True, text=text)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
