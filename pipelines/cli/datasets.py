"""CLI commands for datasets: `affect datasets ls`, `affect sample`, `affect ingest`.

`register(cli)` adds them to the main `affect` group. `clips_for_extraction` and
`write_clips_file` are what `affect extract --dataset` uses to turn a data root into the
runner's clips file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from ..datasets import get_adapter, list_adapters
from ..samples import generate_sample, list_samples, sample_defaults
from ..storage_options import storage_option
from .params import FiniteFloatRange

MAX_PROBLEMS_SHOWN = 30


def clips_for_extraction(dataset: str, data_root: str | Path,
                         problems: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The clip records of a dataset folder (what the runner's clips file holds).

    Clips the adapter had to skip are left out; pass a list as `problems` to receive them.
    """
    result = get_adapter(dataset).scan(data_root)
    if problems is not None:
        problems.extend(result.problems)
    return result.clips


def write_clips_file(clips: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write clip records as JSON lines; returns how many."""
    from ..ingest import _jsonable

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for clip in clips:
            f.write(json.dumps(_jsonable(clip), ensure_ascii=False) + "\n")
            n += 1
    return n


def _print_problems(problems: list[dict[str, Any]], ledger: str | None) -> None:
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        click.echo(f"skipped: {problem['message']}", err=True)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        where = f" (all in {ledger})" if ledger else ""
        click.echo(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more{where}", err=True)


@click.group("datasets")
def datasets_group() -> None:
    """Dataset layouts: what each reads and its default recipe."""


@datasets_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def datasets_ls(as_json: bool) -> None:
    """List the dataset layouts, the files each reads and its default recipe."""
    described = [get_adapter(name).describe() for name in list_adapters()]
    if as_json:
        click.echo(json.dumps(described, indent=1))
        return
    for d in described:
        recipe = d["recipe"]
        click.echo(f"{d['name']}: {d['title']}")
        for line in d["reads"]:
            click.echo(f"    reads  {line}")
        click.echo(f"    recipe {', '.join(recipe['encoders'])} -> {recipe['default_head']}")
        options = {k: v for k, v in recipe["encoder_options"].items() if v}
        if options:
            click.echo(f"    options {json.dumps(options)}")
        video = [f"{recipe['fps']:g} fps" if recipe["fps"] else "",
                 f"{recipe['segments']} segments per clip" if recipe["segments"] else ""]
        if any(video):
            click.echo(f"    video  {', '.join(v for v in video if v)}")
        click.echo(f"    labels {', '.join(recipe['labels'])}")
        if recipe["notes"]:
            click.echo(f"    notes  {recipe['notes']}")


@click.command("sample")
@click.option("--layout", required=True, type=click.Choice(list_samples()),
              help="Dataset layout to imitate.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Folder to create (must be new or empty).")
@click.option("--clips", type=click.IntRange(1, 100_000), default=None,
              help="About how many clips (layout default).")
@click.option("--seconds", type=FiniteFloatRange(0, 600, min_open=True), default=None,
              help="Seconds per clip (REACT: labels are seconds * 25 frames; default 30).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--size", type=click.IntRange(8, 1024), default=None,
              help="Frame size in pixels (default 64).")
def sample_command(layout: str, out: str, clips: int | None, seconds: float | None, seed: int,
                   size: int | None) -> None:
    """Write a small generated copy of a dataset layout with a learnable planted signal."""
    info = generate_sample(layout, out, clips=clips, seconds=seconds, seed=seed, size=size)
    defaults = sample_defaults(layout)
    click.echo(f"{layout} sample: {info.clips} clips of {info.seconds:g} s at "
               f"{info.size}px in {info.root} (defaults: {defaults})")
    click.echo(f"planted signal: {info.signal}")
    click.echo(f"next: affect ingest --dataset {layout} --data-root {info.root} --store STORE")


@click.command("ingest")
@storage_option
@click.option("--dataset", required=True, type=click.Choice(list_adapters()))
@click.option("--data-root", required=True, type=click.Path(),
              help="The dataset folder, as distributed.")
@click.option("--store", "store_url", required=True, help="Store path or URL (.zarr or .h5).")
@click.option("--add-dataset", is_flag=True,
              help="Add this dataset to a store that holds another one (mixed clip tables).")
def ingest_command(dataset: str, data_root: str, store_url: str, add_dataset: bool) -> None:
    """Read a dataset folder into the store: clip table, label streams, aux arrays, ledger."""
    from features_store import open_store

    from ..ingest import ingest as run_ingest

    store = open_store(store_url, mode="a", dataset=dataset)
    report = run_ingest(get_adapter(dataset), data_root, store, add_dataset=add_dataset)
    click.echo(report.summary())
    _print_problems(report.problems, store.ledger_path())
    sys.stdout.flush()


def register(cli: click.Group) -> None:
    """Add `datasets`, `sample` and `ingest` to the main `affect` command group."""
    cli.add_command(datasets_group)
    cli.add_command(sample_command)
    cli.add_command(ingest_command)


# The names `pipelines.cli` looks up.
datasets = datasets_group
sample = sample_command
ingest = ingest_command
