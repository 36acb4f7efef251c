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
    kind: str = "run"  # "run", or "ensemble" (an `affect ensemble` export of several runs)
    best_metrics: dict[str, Any] = field(default_factory=dict)  # all of the best epoch's
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # fidelity to the paper (heads/profile.py); runs from before profiles existed read "paper"
    profile: str = "paper"
    deviations: list[str] = field(default_factory=list)
    approximate: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def value_of(self, name: str) -> float | None:
        """A metric of this row for sorting: `best`, `test`, or any metric of the best epoch."""
        if name == "best":
            return self.best_value
        if name == "test":
            return self.test_value
        value = self.best_metrics.get(name)
        return float(value) if isinstance(value, int | float) else None

    def field_text(self, name: str) -> str | None:
        """A field as text for `--filter` (a row field, else a config field); None if absent."""
        if name in ("run", "head", "dataset", "store", "seed", "metric", "profile", "kind",
                    "val_split"):
            value = getattr(self, name)
        elif name in self.config:
            value = self.config[name]
        else:
            return None
        return "-" if value is None else str(value)


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def read_run(run_dir: str | Path) -> RunRow | None:
    """The row of one run folder (None if it is not one)."""
    root = Path(run_dir)
    config = _read_json(root / "config.json")
    if not config or "head" not in config or "config" not in config:
        return None
    metric, mode = _metric_of(config)
    settings = config["config"]
    val_split = settings.get("val_split", "val")
    epochs_done, best_value, best_epoch, best_metrics = 0, None, None, {}
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
                    best_metrics = _scalar_metrics(record.get("metrics", {}))
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
        best_metrics=best_metrics, config=dict(settings),
        extra={"metric_mode": mode},
        profile=str(config.get("profile", settings.get("profile", "paper"))),
        deviations=list(config.get("deviations", [])),
        approximate=list(config.get("approximate", [])),
    )


def read_ensemble(record_file: str | Path) -> RunRow | None:
    """The row of an `affect ensemble` export (its ensemble.json), None if it is not one."""
    path = Path(record_file)
    record = _read_json(path)
    if not record or record.get("kind") != "ensemble" or not record.get("runs"):
        return None
    members = [r for r in (read_run(run) for run in record["runs"]) if r is not None]
    first = members[0] if members else None
    metric = first.metric if first else ""
    split = record.get("split", "test")
    value = (record.get("metrics") or {}).get(metric)
    value = float(value) if isinstance(value, int | float) else None
    seeds = sorted({m.seed for m in members if m.seed is not None})
    return RunRow(
        run=str(path.parent), head=record.get("head") or (first.head if first else "?"),
        dataset=first.dataset if first else "", store=first.store if first else "",
        streams=dict(first.streams) if first else {}, seed=None,
        epochs_done=0, epochs=None, metric=metric, best_value=None, best_epoch=None,
        val_split=split, test_value=value if split == "test" else None,
        updated=datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M"),
        profile=first.profile if first else "paper",
        deviations=list(first.deviations) if first else [],
        approximate=list(first.approximate) if first else [], kind="ensemble",
        best_metrics=_scalar_metrics(record.get("metrics") or {}) if split != "test" else {},
        extra={"runs": list(record["runs"]), "split": split, "member_seeds": seeds},
    )


ENSEMBLE_FILE = "ensemble.json"


def find_runs(directory: str | Path) -> list[RunRow]:
    """Every run folder and ensemble export under `directory` (itself included), by path."""
    base = Path(directory)
    rows = []
    for config in sorted(base.rglob("config.json")):
        if "checkpoints" in config.parts or "predictions" in config.parts:
            continue
        row = read_run(config.parent)
        if row is not None:
            rows.append(row)
    for record in sorted(base.rglob(ENSEMBLE_FILE)):
        row = read_ensemble(record)
        if row is not None:
            rows.append(row)
    return sorted(rows, key=lambda r: r.run)


def filter_rows(rows: Sequence[RunRow], filters: Sequence[str]) -> list[RunRow]:
    """Rows matching every `field=value` (a glob: `head=trans*`); fields are the table's
    (head, dataset, store, seed, metric, profile, kind) or any config field (`lr=0.001`)."""
    from fnmatch import fnmatchcase

    from features_store.errors import UserError

    wanted = []
    for item in filters:
        name, sep, pattern = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--filter {item}: expected FIELD=VALUE, e.g. --filter head=trm")
        wanted.append((name.strip(), pattern.strip()))
    kept = []
    for row in rows:
        texts = [row.field_text(name) for name, _ in wanted]
        if all(t is not None and fnmatchcase(t, p) for t, (_, p) in zip(texts, wanted)):
            kept.append(row)
    for name, _ in wanted:
        if rows and all(row.field_text(name) is None for row in rows):
            raise UserError(f"--filter {name}=...: no run has a field {name!r} (use head, "
                            "dataset, store, seed, metric, profile, kind or a config field)")
    return kept


def _group_key(row: RunRow) -> str:
    """Runs that differ only in their seed (the same head, store, streams and settings)."""
    settings = {k: v for k, v in row.config.items() if k != "seed"}
    return json.dumps([row.kind, row.head, row.store, row.streams, settings], sort_keys=True,
                      default=str)


@dataclass
class SeedGroup:
    """Runs of one config over several seeds, summarised as mean ± std (population) and n."""

    rows: list[RunRow]

    def stats(self, values: Sequence[float | None]) -> tuple[float, float, int] | None:
        present = [v for v in values if v is not None]
        if not present:
            return None
        mean = sum(present) / len(present)
        return mean, math.sqrt(sum((v - mean) ** 2 for v in present) / len(present)), len(present)

    @property
    def best(self) -> tuple[float, float, int] | None:
        return self.stats([r.best_value for r in self.rows])

    @property
    def test(self) -> tuple[float, float, int] | None:
        return self.stats([r.test_value for r in self.rows])

    def value_of(self, name: str) -> float | None:
        found = self.stats([r.value_of(name) for r in self.rows])
        return None if found is None else found[0]


def group_runs(rows: Sequence[RunRow]) -> list[SeedGroup]:
    """Rows in groups of one config (a group of one for a run without seed siblings), in the
    order of each group's first row."""
    groups: dict[str, SeedGroup] = {}
    for row in rows:
        key = _group_key(row) if row.kind == "run" else row.run
        groups.setdefault(key, SeedGroup([])).rows.append(row)
    return list(groups.values())


def sort_groups(groups: Sequence[SeedGroup], metric: str) -> list[SeedGroup]:
    """Best first by `metric` (`best`, `test` or a metric name; a group by its mean, seeds within
    it by their own value); lower is better for losses and for min-mode selection metrics."""
    rows = [r for g in groups for r in g.rows]
    modes = {r.extra.get("metric_mode") for r in rows
             if metric in ("best", "test") or r.metric == metric}
    lower_better = metric.endswith("loss") or modes == {"min"}

    def order(value: float | None) -> tuple[bool, float]:
        if value is None:
            return (True, 0.0)  # runs without the metric go last
        return (False, value if lower_better else -value)

    for group in groups:
        group.rows.sort(key=lambda r: order(r.value_of(metric)))
    return sorted(groups, key=lambda g: order(g.value_of(metric)))


def _mean_std(stats: tuple[float, float, int] | None) -> str:
    return "-" if stats is None else f"{stats[0]:.4f} ± {stats[1]:.4f} (n={stats[2]})"


def _group_name(group: SeedGroup) -> str:
    """`runs/trm/` for the folders `--seeds` made (RUN/seed-<s>), else the first run's and how
    many more."""
    paths = [Path(r.run) for r in group.rows]
    if len({p.parent for p in paths}) == 1 and all(p.name.startswith("seed-") for p in paths):
        return f"{paths[0].parent}/"
    return f"{paths[0]} +{len(paths) - 1}"


def format_table(rows: Sequence[RunRow], groups: Sequence[SeedGroup] | None = None) -> str:
    """A plain-text table, one line per run (streams by alias); a group of seeds of one config
    gets a summary line (mean ± std, n) above its seeds, which are indented."""
    def value(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    from features_store.tables import format_table as shared_table

    header = ["run", "head", "profile", "dataset", "store", "streams", "seed", "epochs",
              "metric", "best", "test", "updated"]
    lines = []
    for group in groups if groups is not None else group_runs(rows):
        several = len(group.rows) > 1
        if several:
            first = group.rows[0]
            seeds = ",".join(str(seed) for seed in sorted(
                r.seed for r in group.rows if r.seed is not None))
            lines.append([f"{_group_name(group)} (seeds {seeds})", first.head,
                          profile_cell(first), first.dataset or "-", first.store,
                          ",".join(first.streams) or "-", f"{len(group.rows)} seeds", "",
                          first.metric or "-", _mean_std(group.best), _mean_std(group.test), ""])
        for r in group.rows:
            epochs = (f"{r.epochs_done}/{r.epochs}" if r.epochs is not None
                      else str(r.epochs_done) if r.kind == "run" else "-")
            best = value(r.best_value) + (f"@{r.best_epoch}" if r.best_epoch else "")
            name = r.run if r.kind == "run" else (
                f"{r.run} (ensemble of {len(r.extra.get('runs', []))} runs)")
            seed = "-" if r.seed is None else str(r.seed)
            lines.append([f"  {name}" if several else name, r.head, profile_cell(r),
                          r.dataset or "-", r.store, ",".join(r.streams) or "-", seed, epochs,
                          r.metric or "-", best, value(r.test_value), r.updated])
    return shared_table([dict(zip(header, line)) for line in lines], header)


def profile_cell(row: RunRow) -> str:
    """"paper", or the profile with its departures: "fixed: edge_topk=per-node, ..."."""
    notes = [*row.deviations, *(f"approximate: {a}" for a in row.approximate)]
    return row.profile + (": " + ", ".join(notes) if notes else "")


def diff_runs(run_a: str | Path, run_b: str | Path) -> list[dict[str, Any]]:
    """What differs between two runs: config (and how it ran: amp, device, profile), streams
    and final metrics, as rows {section, field, a, b}; fields equal in both are left out."""
    from features_store.errors import UserError

    rows = []
    loaded = []
    for run in (run_a, run_b):
        config = _read_json(Path(run) / "config.json")
        row = read_run(run)
        if config is None or row is None:
            raise UserError(f"{Path(run) / 'config.json'}: not a run folder (no readable "
                            "config.json)")
        loaded.append((config, row))
    (config_a, row_a), (config_b, row_b) = loaded

    def section(name: str, a: dict[str, Any], b: dict[str, Any]) -> None:
        for key in sorted(set(a) | set(b)):
            va, vb = a.get(key), b.get(key)
            if va != vb:
                rows.append({"section": name, "field": key, "a": va, "b": vb})

    ran = ("head", "store", "device", "amp", "profile", "deviations", "approximate")
    section("run", {k: config_a.get(k) for k in ran}, {k: config_b.get(k) for k in ran})
    section("config", config_a["config"], config_b["config"])
    section("streams", config_a.get("streams", {}), config_b.get("streams", {}))
    metrics_a = {f"{row_a.val_split} best: {k}": v for k, v in row_a.best_metrics.items()}
    metrics_b = {f"{row_b.val_split} best: {k}": v for k, v in row_b.best_metrics.items()}
    for run, out in ((run_a, metrics_a), (run_b, metrics_b)):
        for path in sorted(Path(run).glob("eval-*.json")):
            payload = _read_json(path) or {}
            split = payload.get("split", path.stem[len("eval-"):])
            for k, v in _scalar_metrics(payload.get("metrics", {})).items():
                out[f"{split} eval: {k}"] = v
    metrics_a["epochs done"], metrics_b["epochs done"] = row_a.epochs_done, row_b.epochs_done
    metrics_a["best epoch"], metrics_b["best epoch"] = row_a.best_epoch, row_b.best_epoch
    section("metrics", metrics_a, metrics_b)
    return rows


def format_diff(rows: Sequence[dict[str, Any]], run_a: str, run_b: str) -> str:
    """The diff as one table (section, field, A, B); long values such as stream keys whole."""
    from features_store.tables import format_table as shared_table

    if not rows:
        return f"{run_a} and {run_b}: same config, streams and metrics"

    def text(value: Any) -> Any:
        if isinstance(value, dict | list | tuple):
            return json.dumps(value)
        return value

    shown = [{"section": r["section"], "field": r["field"], "A": text(r["a"]),
              "B": text(r["b"])} for r in rows]
    return (f"A = {run_a}\nB = {run_b}\n"
            + shared_table(shown, ["section", "field", "A", "B"]))


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
