"""`affect metrics ...`: score prediction folders with the benchmarks' official metrics."""

from __future__ import annotations

import json

import click

from heads.react_metrics import ALL_METRIC_NAMES, METRIC_NAMES


def _table(rows: dict[str, dict[str, float]]) -> str:
    """One line per predictor, one column per metric: the official ones, then `|` and ours."""
    from features_store.tables import format_table

    official, ours = list(METRIC_NAMES), [m for m in ALL_METRIC_NAMES if m not in METRIC_NAMES]
    shown = [{"predictor": name, **{m: values[m] for m in ALL_METRIC_NAMES}, "|": "|"}
             for name, values in rows.items()]
    return format_table(shown, ["predictor", *official, "|", *ours], {"predictor": ""})


@click.group()
def metrics() -> None:
    """Score predictions with benchmark metrics."""


@metrics.command("react")
@click.option("--pred-dir", required=True, type=click.Path(file_okay=False),
              help="Folder with <split>/<site>/<group>/<pid>/<clip>/result-{0..9}.pth.")
@click.option("--data-root", required=True, type=click.Path(file_okay=False),
              help="REACT dataset root (split csv, Emotion folders, neighbour matrix).")
@click.option("--split", default="test", show_default=True, help="Split name (val, test).")
@click.option("--workers", type=int, default=None, help="CPU threads (default: all).")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Also score the naive baselines (about 2.3x the model's cost).")
@click.option("--frames", type=click.IntRange(50, 100_000), default=750, show_default=True,
              help="Frames per clip scored (the challenge uses 750 = 30 s at 25 fps).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def react(pred_dir: str, data_root: str, split: str, workers: int | None, baselines: bool,
          frames: int, as_json: bool) -> None:
    """REACT facial-reaction metrics (FRC, FRD, S_MSE, FRVar, FRDvs, TLCC) of a prediction
    folder, next to the naive baselines (ground truth, random, mime, mean sequence, mean frame).

    FRC higher is better (max 10), FRD and TLCC lower is better; S_MSE, FRVar, FRDvs measure
    diversity. The six are the official script's numbers; after `|` come our corrected variants
    (TLCC_all: every prediction scored, constant channels as correlation 0).
    """
    from pipelines.react_eval import evaluate_react_dir

    result = evaluate_react_dir(pred_dir, data_root, split, workers=workers, baselines=baselines,
                                n_frames=frames)
    if as_json:
        click.echo(json.dumps(result))
        return
    rows = {"model": {m: result[m] for m in ALL_METRIC_NAMES}, **result["baselines"]}
    click.echo(_table(rows))
