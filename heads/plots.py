"""Loss and metric curves of a run, drawn from RUN/metrics.jsonl into one PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a metrics.jsonl file (missing file: empty list)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill or a full disk: the others still count
        if isinstance(record, dict):
            records.append(record)
    return records


def plot_curves(records: list[dict[str, Any]], out_png: Path, metric_name: str,
                extra_metrics: Sequence[str] = ()) -> Path:
    """Draw training loss (per logged step and per epoch) and the validation metric
    `metric_name` (plus `extra_metrics`, which should share its scale) to `out_png`."""
    import matplotlib.pyplot as plt

    fig = curves_figure(records, metric_name, extra_metrics)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def curves_figure(records: list[dict[str, Any]], metric_name: str,
                  extra_metrics: Sequence[str] = ()):
    """The figure `plot_curves` saves: steps and epochs are counted in whole numbers on both
    axes (two epochs drew ticks at 1.0, 1.2, ... 2.0)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: training machines have no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    evals = [r for r in records if r.get("kind") == "eval"]

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        ax_loss.plot([r["step"] for r in steps], [r["loss"] for r in steps],
                     lw=0.8, alpha=0.6, label="train loss (step)")
    if epochs:
        ax_loss.plot([r["step"] for r in epochs], [r["train_loss"] for r in epochs],
                     "o-", label="train loss (epoch mean)")
    ax_loss.set_xlabel("optimiser step")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    if steps or epochs:
        ax_loss.legend()

    if evals:
        xs = [r["epoch"] for r in evals]
        # the head's selection metric drawn thicker; others only if present and numeric
        names = [metric_name, *(m for m in extra_metrics if m != metric_name)]
        names = [n for n in names
                 if any(isinstance(r["metrics"].get(n), int | float) for r in evals)]
        for name in names:
            ys = [r["metrics"].get(name, float("nan")) for r in evals]
            ax_metric.plot(xs, ys, "o-", lw=2.5 if name == metric_name else 1.0, label=name)
        ax_metric.legend(fontsize="small")
    ax_metric.set_xlabel("epoch")
    ax_metric.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_metric.set_title(f"validation (best by {metric_name})")
    fig.tight_layout()
    return fig
