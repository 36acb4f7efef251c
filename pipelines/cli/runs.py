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
@click.option("--sort", "sort_by", default=None, metavar="METRIC",
              help="Best first by METRIC: best (each run's selection metric), test, or any "
                   "validation metric name (a seed group by its mean).")
@click.option("--filter", "filters", multiple=True, metavar="FIELD=VALUE",
              help="Only runs whose FIELD matches VALUE (a glob; repeatable): head, dataset, "
                   "store, seed, metric, profile, kind or a config field, e.g. head=trm.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run, as a list.")
def runs_ls(directory: str, sort_by: str | None, filters: tuple[str, ...],
            as_json: bool) -> None:
    """One row per run under DIRECTORY: head, dataset, profile, streams (aliases), seed, epochs,
    best validation metric, test metric (if evaluated), last update. Runs of one config over
    several seeds get a summary row (mean ± std, n) above them; ensembles are listed too."""
    from pathlib import Path

    from pipelines.runs import filter_rows, find_runs, format_table, group_runs, sort_groups

    if not Path(directory).is_dir():
        raise UserError(f"{directory}: no such folder of runs")
    rows = filter_rows(find_runs(directory), filters)
    groups = group_runs(rows)
    if sort_by:
        groups = sort_groups(groups, sort_by)
    rows = [r for g in groups for r in g.rows]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    elif not rows:
        click.echo(f"no runs under {directory}" + (" match " + " ".join(filters)
                                                     if filters else ""))
    else:
        click.echo(format_table(rows, groups))


@runs.command("diff")
@click.argument("run_a", metavar="RUN_A", type=click.Path(file_okay=False))
@click.argument("run_b", metavar="RUN_B", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The differences as a JSON list.")
def runs_diff(run_a: str, run_b: str, as_json: bool) -> None:
    """Config, streams and metrics of two runs side by side: only what differs."""
    from pipelines.runs import diff_runs, format_diff

    rows = diff_runs(run_a, run_b)
    click.echo(json.dumps(rows, indent=2) if as_json else format_diff(rows, run_a, run_b))


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
