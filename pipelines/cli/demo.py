"""`affect demo` (and `make demo`): the main job end to end on a generated REACT sample.

Every step runs as the real `affect` command, printed before it runs, so a newcomer can copy
the commands for their own data. With no network and no cached published weights, the recipe's
encoders run with random weights in reduced size, and the output says so loudly.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click

from features_store.errors import UserError

RECIPE_ENCODERS = ("swin-t", "vggish-react", "wav2vec2-base")
# Smaller models and more steps per epoch for the other heads' demos on their tiny samples
# (the paper's settings are for thousands of clips); anything not listed keeps its defaults.
HEAD_DEMO_SETTINGS: dict[str, list[str]] = {
    "trm": ["hidden=64", "heads=4", "batch_size=4", "lr=3e-3"],
    "temporal_attention": ["lr=1e-3", "lr_prompts=1e-3", "lr_adapter=1e-3", "batch_size=4"],
    "tpn_awm": ["lr=1e-3", "batch_size=4"],
}


def _run(args: list[str], log) -> None:
    command = ["affect", *args]
    log(click.style("$ " + shlex.join(command), bold=True))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pipelines", *args])
    if result.returncode != 0:
        raise UserError(f"demo step failed (exit {result.returncode}): {shlex.join(command)}")
    log(click.style(f"  ({time.perf_counter() - started:.0f} s)", dim=True))


def _continue_run(run: str, log) -> list[str]:
    """`--resume` when an earlier demo left this run folder with a checkpoint (interrupted during
    training, or finished): rerunning the demo continues that run instead of being refused."""
    from heads.trainer import RunPaths

    if not RunPaths(Path(run)).last.exists():
        return []
    log(f"(an earlier demo left {run}: its training resumes from the last finished epoch)")
    return ["--resume"]


def _published_weights_here() -> bool:
    from extract.encoders import weights_available

    return all(weights_available(name) for name in RECIPE_ENCODERS)


@click.command()
@click.option("--out", "out_dir", default="demo", show_default=True, type=click.Path())
@click.option("--clips", type=click.IntRange(4), default=12, show_default=True,
              help="Dialogue sessions in the generated sample.")
@click.option("--seconds", type=click.IntRange(2), default=8, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=4, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--head", "head_name", default="regnn", show_default=True,
              help="Any head: its own dataset's sample, extraction, training, evaluation and "
                   "an HTML report (regnn: the REACT demo with export and REACT metrics).")
def demo(out_dir: str, clips: int, seconds: int, epochs: int, device: str,
         head_name: str) -> None:
    """Sample -> extract -> train REGNN -> evaluate -> export -> report, printing each command."""
    if head_name != "regnn":
        _demo_head(head_name, out_dir, epochs, device)
        return
    from heads.react_metrics import MIN_FRAMES

    if seconds * 25 < MIN_FRAMES:  # the sample is 25 fps; fail now, not after training
        raise UserError(f"--seconds {seconds}: {seconds * 25} frames per clip, but REACT's "
                        f"TLCC metric needs at least {MIN_FRAMES}; use --seconds "
                        f"{-(-MIN_FRAMES // 25)} or more")
    log = click.echo
    data = os.path.join(out_dir, "data", "react")
    store = os.path.join(out_dir, "store", "react.zarr")
    run = os.path.join(out_dir, "runs", "regnn")
    export = os.path.join(run, "export")
    started = time.perf_counter()
    if not os.path.exists(os.path.join(data, "train.csv")):
        _run(["sample", "--layout", "react", "--out", data, "--clips", str(clips),
              "--seconds", str(seconds), "--seed", "0"], log)
    weights = ["--weights", "default"]
    if not _published_weights_here():
        log(click.style(
            "\n!!! The published weights of swin-t, vggish-react and wav2vec2-base are not on\n"
            "!!! this machine, so the demo extracts with RANDOM weights in REDUCED size. The\n"
            "!!! pipeline is real; the numbers mean nothing about the models. Download the\n"
            "!!! weights (see `affect encoders ls`) and rerun for real features.\n",
            fg="yellow", bold=True))
        weights = ["--weights", "random", "--reduced"]
    _run(["extract", "--dataset", "react", "--data-root", data, "--store", store,
          "--device", device, "--batch-size", "32", *weights], log)
    _run(["store", "verify", store], log)
    _run(["store", "ls", store], log)
    _run(["train", "--head", "regnn", "--store", store, "--out", run, "--epochs", str(epochs),
          "--device", device, "--set", "iterations_per_epoch=30", "--set", "batch_size=16",
          "--set", "threshold_at_iteration=10", "--set", "cross_layers=2",
          "--set", "self_layers=2", *_continue_run(run, log)], log)
    _run(["evaluate", "--run", run, "--split", "test"], log)
    _run(["predict", "--run", run, "--split", "test", "--export", export], log)
    _run(["metrics", "react", "--pred-dir", export, "--data-root", data, "--split", "test",
          "--frames", str(seconds * 25)], log)
    _run(["report", run, "--device", device if device != "auto" else "cpu"], log)
    log("")
    log(click.style(f"demo finished in {time.perf_counter() - started:.0f} s", bold=True))
    log(f"  sample dataset : {data}")
    log(f"  feature store  : {store}   (affect store ls {store})")
    log(f"  run            : {run}   (metrics.jsonl, config.json, checkpoints/)")
    log(f"  profile        : {_profile_of(run)}")
    log(f"  plots          : {os.path.join(run, 'curves.png')}")
    log(f"  report         : {os.path.join(run, 'report.html')}")
    log(f"  predictions    : {export}   (<split>/<site>/<group>/<pid>/<clip>/result-*.pth)")


def _profile_of(run: str) -> str:
    """The run's profile and its departures from the paper, as its config.json records them."""
    from heads.trainer import run_fidelity
    from pipelines.cli.heads import fidelity_line

    return fidelity_line(run_fidelity(run))


def _demo_head(head_name: str, out_dir: str, epochs: int, device: str) -> None:
    """Any head on its own dataset's generated sample (the sample's default size), random
    reduced encoders unless the recipe's published weights are here, then an HTML report."""
    from extract.encoders import weights_available
    from heads.registry import get_head
    from pipelines.datasets import get_adapter

    log = click.echo
    cls = get_head(head_name)
    dataset = cls.default_dataset
    adapter = get_adapter(dataset)
    data = os.path.join(out_dir, "data", dataset)
    store = os.path.join(out_dir, "store", f"{dataset}.zarr")
    run = os.path.join(out_dir, "runs", head_name)
    started = time.perf_counter()
    if not os.path.exists(os.path.join(data, "SAMPLE.json")):
        _run(["sample", "--layout", dataset, "--out", data, "--seed", "0"], log)
    encoders = [e.split("@")[0] for e in adapter.recipe.encoders]
    weights = ["--weights", "default"]
    if not all(weights_available(name) for name in encoders):
        log(click.style(
            f"\n!!! The published weights of {', '.join(dict.fromkeys(encoders))} are not all on "
            "this machine,\n!!! so the demo extracts with RANDOM weights in REDUCED size: the "
            "numbers mean\n!!! nothing about the models (see `affect encoders ls`).\n",
            fg="yellow", bold=True))
        weights = ["--weights", "random", "--reduced"]
    _run(["extract", "--dataset", dataset, "--data-root", data, "--store", store,
          "--device", device, "--batch-size", "32", *weights], log)
    _run(["store", "ls", store], log)
    sets = [a for item in HEAD_DEMO_SETTINGS.get(head_name, []) for a in ("--set", item)]
    _run(["train", "--head", head_name, "--store", store, "--out", run, "--epochs", str(epochs),
          "--device", device, *sets, *_continue_run(run, log)], log)
    _run(["evaluate", "--run", run, "--split", "test"], log)
    _run(["report", run, "--device", device if device != "auto" else "cpu"], log)
    log("")
    log(click.style(f"demo of {head_name} finished in {time.perf_counter() - started:.0f} s",
                    bold=True))
    log(f"  sample dataset : {data}")
    log(f"  feature store  : {store}   (affect store ls {store})")
    log(f"  run            : {run}   (affect runs ls {os.path.dirname(run)})")
    log(f"  profile        : {_profile_of(run)}")
    log(f"  report         : {os.path.join(run, 'report.html')}")
