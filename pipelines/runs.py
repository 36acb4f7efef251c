"""The experiment table: run folders found under a directory, one row each, and seed summaries.

A run folder is any folder with a trainer's config.json (head, config, store, streams). Everything
a row shows is read from the run's own files (config.json, metrics.jsonl, eval-<split>.json) and
the store's store.json, so listing a thousand runs imports no model code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUMMARY_FILE = "seeds-summary.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _metric_of(config: dict[str, Any]) -> tuple[str, str]:
    """The run's selection metric and mode; runs written before config.json recorded them ask
    the head registry."""
    if config.get("metric"):
        return config["metric"], config.get("metric_mode", "max")
    try:
        from heads.registry import get_head

        cls = get_head(config["head"])
        return cls.metric_name, cls.metric_mode
    except Exception:  # an unknown head: the row still lists what the files say
        return "", "max"


def store_dataset(location: str) -> str:
    """The dataset a store was built for (its store.json), '' when it cannot be read."""
    try:
        from features_store import open_store

        return str(open_store(location, "r").attrs.get("dataset") or "")
    except Exception:  # a moved or deleted store: the run's own files still describe it
        return ""


@dataclass
class RunRow:
    run: str
    head: str
    dataset: str
    store: str
    streams: dict[str, str]
    seed: int | None
    epochs_done: int
    epochs: int | None
    metric: str
    best_value: float | None
    best_epoch: int | None
    val_split: str
    test_value: float | None
    updated: str
    extra: dict[str, Any] = field(default_factory=dict)
    # fidelity to the paper (heads/profile.py); runs from before profiles existed read "paper"
    profile: str = "paper"
    deviations: list[str] = field(default_factory=list)
    approximate: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_run(run_dir: str | Path) -> RunRow | None:
    """The row of one run folder (None if it is not one)."""
    root = Path(run_dir)
    config = _read_json(root / "config.json")
    if not config or "head" not in config or "config" not in config:
        return None
    metric, mode = _metric_of(config)
    settings = config["config"]
    val_split = settings.get("val_split", "val")
    epochs_done, best_value, best_epoch = 0, None, None
    metrics_file = root / "metrics.jsonl"
    if metrics_file.exists():
        for line in metrics_file.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: the others still count
            if record.get("kind") == "epoch":
                epochs_done = max(epochs_done, int(record.get("epoch", 0)))
            if record.get("kind") == "eval" and record.get("best"):
                value = record.get("metrics", {}).get(metric)
                if isinstance(value, int | float):
                    best_value, best_epoch = float(value), int(record["epoch"])
    test = _read_json(root / "eval-test.json") if val_split != "test" else None
    test_value = (test or {}).get("metrics", {}).get(metric)
    stamp = (metrics_file if metrics_file.exists() else root / "config.json").stat().st_mtime
    return RunRow(
        run=str(root), head=config["head"], dataset=store_dataset(config.get("store", "")),
        store=config.get("store", ""), streams=dict(config.get("streams", {})),
        seed=settings.get("seed"), epochs_done=epochs_done, epochs=settings.get("epochs"),
        metric=metric, best_value=best_value, best_epoch=best_epoch, val_split=val_split,
        test_value=float(test_value) if isinstance(test_value, int | float) else None,
        updated=datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M"),
        extra={"metric_mode": mode},
        profile=str(config.get("profile", settings.get("profile", "paper"))),
        deviations=list(config.get("deviations", [])),
        approximate=list(config.get("approximate", [])),
    )


def find_runs(directory: str | Path) -> list[RunRow]:
    """Every run folder under `directory` (itself included), sorted by path."""
    base = Path(directory)
    rows = []
    for config in sorted(base.rglob("config.json")):
        if "checkpoints" in config.parts or "predictions" in config.parts:
            continue
        row = read_run(config.parent)
        if row is not None:
            rows.append(row)
    return rows


def format_table(rows: Sequence[RunRow]) -> str:
    """A plain-text table, one line per run (stream keys shortened to their hash prefix)."""
    def value(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    from features_store.tables import format_table as shared_table

    header = ["run", "head", "profile", "dataset", "store", "streams", "seed", "epochs",
              "metric", "best", "test", "updated"]
    lines = []
    for r in rows:
        keys = ",".join(key.rsplit("-", 1)[-1][:8] for key in r.streams.values())
        epochs = f"{r.epochs_done}/{r.epochs}" if r.epochs is not None else str(r.epochs_done)
        best = value(r.best_value) + (f"@{r.best_epoch}" if r.best_epoch else "")
        lines.append([r.run, r.head, profile_cell(r), r.dataset or "-", r.store, keys or "-",
                      r.seed, epochs, r.metric or "-", best, value(r.test_value), r.updated])
    return shared_table([dict(zip(header, line)) for line in lines], header)


def profile_cell(row: RunRow) -> str:
    """"paper", or the profile with its departures: "fixed: edge_topk=per-node, ..."."""
    notes = [*row.deviations, *(f"approximate: {a}" for a in row.approximate)]
    return row.profile + (": " + ", ".join(notes) if notes else "")


def summarise_seeds(run_dirs: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Mean and std (population, over seeds) of every scalar final metric of several runs of
    one config, per split (the validation split's best checkpoint, and any eval-<split>.json),
    written to `out` (JSON) and returned."""
    per_split: dict[str, dict[str, list[float]]] = {}
    seeds = []
    for run_dir in run_dirs:
        root = Path(run_dir)
        config = _read_json(root / "config.json") or {}
        seeds.append(config.get("config", {}).get("seed"))
        for path in sorted(root.glob("eval-*.json")):
            payload = _read_json(path) or {}
            split = payload.get("split", path.stem[len("eval-"):])
            for name, value in payload.get("metrics", {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    per_split.setdefault(split, {}).setdefault(name, []).append(float(value))
    summary: dict[str, Any] = {"runs": [str(r) for r in run_dirs], "seeds": seeds, "splits": {}}
    for split, metrics in per_split.items():
        summary["splits"][split] = {}
        for name, values in metrics.items():
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            summary["splits"][split][name] = {"mean": mean, "std": std, "n": len(values),
                                              "values": values}
    Path(out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{len(summary['runs'])} runs, seeds {summary['seeds']}"]
    for split, metrics in summary["splits"].items():
        lines.append(f"split {split}:")
        for name, stats in metrics.items():
            lines.append(f"  {name:<22} {stats['mean']:.4f} ± {stats['std']:.4f}  "
                         f"(n={stats['n']})")
    return "\n".join(lines)
