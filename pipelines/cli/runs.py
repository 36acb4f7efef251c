"""`affect runs ls` (the experiment table) and `affect report RUN` (one HTML page per run)."""

from __future__ import annotations

import json

import click

from features_store.errors import UserError


@click.group()
def runs() -> None:
    """Run folders: the experiment table."""


@runs.command("ls")
@click.argument("directory", default="runs", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run, as a list.")
def runs_ls(directory: str, as_json: bool) -> None:
    """One row per run under DIRECTORY: head, dataset, store, stream keys, seed, epochs, best
    validation metric, test metric (if evaluated), last update."""
    from pathlib import Path

    from pipelines.runs import find_runs, format_table

    if not Path(directory).is_dir():
        raise UserError(f"{directory}: no such folder of runs")
    rows = find_runs(directory)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    elif not rows:
        click.echo(f"no runs under {directory}")
    else:
        click.echo(format_table(rows))


@click.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="HTML file to write (default: RUN/report.html).")
@click.option("--split", default=None, help="Split of the prediction plot (default: test if "
              "labelled, else the validation split).")
@click.option("--device", default="cpu", show_default=True)
def report(run_dir: str, out: str | None, split: str | None, device: str) -> None:
    """Write one self-contained HTML page of a run: config, streams, curves, the head's plot."""
    from pipelines.report import build_report

    path = build_report(run_dir, out, split=split, device=device)
    click.echo(f"wrote {path}")
