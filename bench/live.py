"""`affect live` throughput and latency for every head that runs live, one table row per head.

For each head (every name in `pipelines.live.steppers.STEPPERS`, or the ones asked for) a run is
built the way the tests build one: its dataset's generated sample, the streams it reads
extracted with random weights, one epoch. Then a new 640x360 clip is played to `affect live`:

- as fast as possible: frames per second sustained by the whole pipeline (decode, encoders,
  the head), and that rate over the run's grid rate (fast rtf; >= 1: it could keep up);
- paced (`--realtime`) from clips made at 25 and at 30 fps, frames arriving as from a camera:
  the real-time factor the run reached (media seconds handled per wall second, 1.0 at best),
  the frames dropped, and the end-to-end latency p50/p95 (from a frame's arrival to its
  prediction; for a head that predicts a segment or a window at a time that includes the wait
  for the segment to complete). Frames are put on the run's grid (its extraction rate), so the
  model's load is the run's rate whatever the camera's. A windowed head runs with its default
  window and hop (the `steps` column).

    python bench/live.py --head trm [--full] [--threads N] [--seconds S] [--work DIR]
    python bench/live.py --heads all --seconds 10

--full: the encoders' real architecture sizes (random weights) and the heads' paper sizes;
default: reduced encoders and narrow heads. `bench/gpu.py`'s live part runs `measure_head` on
CUDA.
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SENTENCE = "Don't forget a jacket."


@dataclass(frozen=True)
class Recipe:
    """How to build a run of one head: its dataset's sample, the streams it reads, settings."""

    dataset: str
    encoders: str
    sets: tuple[str, ...] = ()       # both sizes
    reduced: tuple[str, ...] = ()    # narrow head (default sizes)
    text: str | None = None          # the sentence for a run that reads a text stream
    sample: tuple[tuple[str, float], ...] = (("clips", 6), ("seconds", 1.5))


_NARROW_FAMILY = ("d_model=32", "n_layers=1", "ffn=64", "lstm_hidden=32",
                  "regressor_hidden=32,32")
# The transformer family reads the ABAW 2022 streams (its recipe's encoders) and keeps the
# paper's 250-frame segment at both sizes: the segment sets its live latency.
_FAMILY = Recipe("affwild2", "hsemotion-enet-b0,vggish,wav2vec2-base", ("batch_size=4",),
                 _NARROW_FAMILY)
RECIPES: dict[str, Recipe] = {
    "trm": Recipe("cremad", "vggish-react,hsemotion-enet-b0,embeddinggemma",
                  ("profile=fixed", "audio=vggish-react", "batch_size=4"),
                  ("hidden=32", "heads=4"), SENTENCE, (("clips", 12), ("seconds", 0.8))),
    "transformer-lstm": _FAMILY,
    "transformer-attention": _FAMILY,
    "transformer": _FAMILY,
    "fclstm-xl": Recipe("affwild2", _FAMILY.encoders, ("batch_size=4",),
                        ("d_model=32", "lstm_hidden=32", "regressor_hidden=32,32")),
    # the windowed heads, as tests/test_predict_media_heads.py builds them
    "temporal_attention": Recipe("raer", "clip-vit-b16@rapt@face,clip-vit-b16@rapt@body",
                                 ("batch_size=4",), sample=(("clips", 10), ("seconds", 1))),
    "tpn_awm": Recipe("iemocap", "wav2vec2-base,clip-vit-b16", ("batch_size=4",),
                      ("shared_dim=16",), sample=(("clips", 12), ("seconds", 1))),
    "regnn": Recipe("react", "swin-t,vggish-react", ("iterations_per_epoch=2", "batch_size=4"),
                    ("cross_layers=1", "self_layers=1", "n_samples=2"),
                    sample=(("clips", 8), ("seconds", 4))),
}


def live_heads() -> list[str]:
    from pipelines.live.steppers import STEPPERS

    return list(STEPPERS)


def recipe_for(head: str) -> Recipe:
    """The head's recipe above, else its default dataset's recipe encoders on a small sample:
    any head `affect live` runs can be measured."""
    from heads.registry import get_head
    from pipelines.datasets import get_adapter

    if head in RECIPES:
        return RECIPES[head]
    dataset = get_head(head).default_dataset
    return Recipe(dataset, ",".join(get_adapter(dataset).recipe.encoders), ("batch_size=4",),
                  sample=(("clips", 12), ("seconds", 2)))


def build_run(root: Path, head: str, full: bool, device: str) -> Path:
    """RUN folder of `head` under `root` (the dataset's sample and store shared by the heads
    that read it); built once, reused when present."""
    from click.testing import CliRunner

    from pipelines.cli import cli
    from pipelines.samples import generate_sample

    recipe = recipe_for(head)
    run = root / f"run-{head}"
    if (run / "config.json").exists():
        return run

    def affect(*args: str) -> None:
        here = os.getcwd()
        os.chdir(root)
        try:
            result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        finally:
            os.chdir(here)
        assert result.exit_code == 0, result.output[-2000:]

    store = f"{recipe.dataset}-{recipe.encoders.replace(',', '+').replace('@', '_')}.zarr"
    if not (root / store).exists():
        data = root / f"data-{recipe.dataset}"
        if not data.exists():
            generate_sample(recipe.dataset, data, seed=0, size=32, **dict(recipe.sample))
        affect("extract", "--dataset", recipe.dataset, "--data-root", data.name, "--store",
               store, "--encoders", recipe.encoders, "--weights", "random",
               *([] if full else ["--reduced"]), "--device", device)
    sets = [*recipe.sets, *([] if full else recipe.reduced)]
    affect("train", "--head", head, "--store", store, "--out", run.name, "--device", device,
           "--quiet", "--epochs", "1", *(a for s in sets for a in ("--set", s)))
    return run


def make_clip(path: Path, seconds: float, fps: int) -> Path:
    """A 640x360 moving texture with a tone, at `fps`; made once."""
    if path.exists():
        return path
    import numpy as np

    from pipelines.synthetic.av_writer import write_video

    rng = np.random.default_rng(11)
    texture = rng.integers(0, 256, size=(480, 680, 3), dtype=np.uint8)
    n = int(seconds * fps)
    t = np.arange(int(seconds * 16000)) / 16000
    write_video(path, (np.roll(texture, 4 * k, axis=1)[:360, :640] for k in range(n)), fps=fps,
                audio=(0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    return path


def play(run: Path, source: Path, realtime: bool, device: str, text: str | None) -> dict:
    """One `affect live` over `source`: its summary, its header's stepping and frames/s."""
    from pipelines.live import live

    out = io.StringIO()
    summary = live(str(run), str(source), realtime=realtime, device=device, text=text, out=out)
    header = json.loads(out.getvalue().splitlines()[0])
    wall = summary["media_s"] / summary["realtime_factor"] if summary["realtime_factor"] else 0
    return {**summary, "fps": header["fps"], "steps": _steps(header),
            "frames_per_s": round(summary["frames"] / wall, 2) if wall else 0.0}


def _steps(header: dict) -> str:
    """How the head stepped, in a few words, from live's header line."""
    if header.get("window_s") is not None:
        return f"window {header['window_s']:g} s / hop {header['hop_s']:g} s"
    if header.get("segment_frames"):
        return f"segments of {header['segment_frames']} frames"
    return "frame by frame"


def measure_head(root: Path, head: str, full: bool, device: str, seconds: float) -> dict:
    """One table row: `head` at full or reduced sizes, fast and paced at 25 and 30 fps."""
    run = build_run(root, head, full, device)
    text = recipe_for(head).text
    clips = {fps: make_clip(root / f"clip-{fps}fps-{seconds:g}s.mp4", seconds, fps)
             for fps in (25, 30)}
    fast = play(run, clips[30], False, device, text)
    paced = {fps: play(run, clips[fps], True, device, text) for fps in (25, 30)}
    return {"head": head, "sizes": "full" if full else "reduced", "device": device,
            "grid_fps": fast["fps"], "steps": fast["steps"],
            "frames_per_s": fast["frames_per_s"],
            # the run's grid rate is the model's load, whatever the camera's
            "rtf_fast": round(fast["frames_per_s"] / fast["fps"], 2),
            **{f"paced_{fps}": {k: p[k] for k in ("realtime_factor", "drops", "frames",
                                                   "latency_p50_ms", "latency_p95_ms")}
               for fps, p in paced.items()}}


TABLE_HEADER = ("| head | sizes | steps | grid fps | fast frames/s | fast rtf "
                "| paced 25: rtf, drops, p50 / p95 | paced 30: rtf, drops, p50 / p95 |\n"
                "| --- | --- | --- | ---: | ---: | ---: | --- | --- |")


def _paced(p: dict) -> str:
    return (f"{p['realtime_factor']:.2f}, {p['drops']} of {p['frames'] + p['drops']}, "
            f"{_seconds(p['latency_p50_ms'])} / {_seconds(p['latency_p95_ms'])}")


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"


def table_row(row: dict) -> str:
    return (f"| {row['head']} | {row['sizes']} | {row['steps']} | {row['grid_fps']:g} | "
            f"{row['frames_per_s']} | {row['rtf_fast']} | {_paced(row['paced_25'])} | "
            f"{_paced(row['paced_30'])} |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", action="append", default=[],
                        help="a head to measure (repeatable); default trm")
    parser.add_argument("--heads", default=None, help="'all': every head that runs live")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--work", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    heads = live_heads() if args.heads == "all" else (args.head or ["trm"])
    unknown = [h for h in heads if h not in live_heads()]
    if unknown:
        raise SystemExit(f"bench/live.py: {', '.join(unknown)} does not run live "
                         f"(live runs: {', '.join(live_heads())})")
    sizes = "full" if args.full else "reduced"
    root = Path(args.work or tempfile.mkdtemp(prefix=f"bench-live-{sizes}-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, torch threads "
          f"{args.threads}, device {args.device}, {args.seconds:g} s clips; work {root}",
          flush=True)
    print(TABLE_HEADER, flush=True)
    rows = []
    for head in heads:
        started = time.perf_counter()
        row = measure_head(root, head, args.full, args.device, args.seconds)
        rows.append(row)
        print(table_row(row), flush=True)
        print(json.dumps({**row, "bench_s": round(time.perf_counter() - started, 1)}),
              file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    main()
