"""`affect train | evaluate | predict | ensemble`: heads on a feature store, run folders.

Thin click layer over heads.trainer; errors a user can cause are `UserError` (one line).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from features_store.errors import UserError
from features_store.tables import plural
from pipelines.storage_options import storage_option


def fidelity_line(record: dict) -> str:
    """"paper", or "fixed; deviations: a=1, b=2; approximate: no augmentation"."""
    parts = [str(record.get("profile", "paper"))]
    if record.get("deviations"):
        parts.append("deviations: " + ", ".join(record["deviations"]))
    if record.get("approximate"):
        parts.append("approximate: " + ", ".join(record["approximate"]))
    return "; ".join(parts)


def _default_store(dataset: str) -> str:
    return f"store/{dataset}.zarr"


def _print_metrics(payload: dict, as_json: bool, title: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    targets = payload.get("targets") or {}
    if title is None and targets:  # each output from its own checkpoint: name each
        used = ", ".join(f"{target} from {source['checkpoint']} (epoch {source['epoch']})"
                         for target, source in targets.items())
        title = f"split {payload['split']}: {used}"
    click.echo(title or f"split {payload['split']} ({payload.get('checkpoint', '')} checkpoint, "
               f"epoch {payload.get('epoch', '?')})")
    if "profile" in payload:
        click.echo(f"profile {fidelity_line(payload)}")
    from features_store.tables import format_table

    rows = [{"metric": name, "value": value} for name, value in payload["metrics"].items()]
    for line in format_table(rows, ["metric", "value"]).splitlines()[1:]:
        click.echo(f"  {line}")


@click.command()
@storage_option
@click.option("--head", "head_name", default=None, help="Head name (see the list on error).")
@click.option("--store", default=None,
              help="Feature store (default: store/<head's dataset>.zarr).")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run folder (default: runs/<head>).")
@click.option("--epochs", type=int, default=None, help="Override the number of epochs.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field (repeatable), e.g. --set lr=1e-4.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last epoch.")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-epoch lines (the final "
              "summary and notes such as where a resumed run continues are still printed).")
@click.option("--seeds", default=None, metavar="S1,S2,...",
              help="Train the same config once per seed into RUN/seed-<s>/ (same cached "
                   "features) and write RUN/seeds-summary.json (mean ± std of each metric).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the final summary as one JSON document instead of readable lines.")
def train(head_name: str | None, store: str | None, out: str | None, epochs: int | None,
          overrides: tuple[str, ...], device: str, resume: bool, quiet: bool,
          seeds: str | None, as_json: bool) -> None:
    """Train a head on cached features; writes config, checkpoints, metrics and curves to RUN.

    One line per epoch on stderr (train loss, validation metrics, best so far, s/epoch, ETA);
    a readable summary at the end on stdout (`--json`: one JSON document instead).
    """
    if seeds is not None:
        _train_seeds(head_name, store, out, epochs, overrides, device, resume, quiet, seeds,
                     as_json)
        return
    summary = _train_one(head_name, store, out, epochs, overrides, device, resume, quiet)
    click.echo(json.dumps(summary) if as_json else format_train_summary(summary))


def _check_train_arguments(head_name: str | None, store: str | None, out: str | None,
                           resume: bool) -> tuple[str | None, str | None]:
    """Every check that needs no torch, before torch is imported (seconds under load): returns
    the run folder and store to use (None: the head's default, known once it is imported)."""
    from heads.run_folder import check_run_folder, check_store_location, read_run_config

    if resume:
        if out is None:
            raise UserError("--resume needs --out RUN (the run folder to continue)")
        saved = read_run_config(out)
        if head_name is not None and head_name != saved["head"]:
            raise UserError(f"{Path(out) / 'config.json'}: run is of head {saved['head']!r}, "
                            f"not {head_name!r}")
        store = store or saved["store"]
    elif head_name is None:
        raise UserError("--head is required (e.g. --head transformer-lstm)")
    else:
        out = out or f"runs/{head_name}"
    check_run_folder(out, resume)
    if store is not None:
        check_store_location(store)
    return out, store


def _train_one(head_name: str | None, store: str | None, out: str | None, epochs: int | None,
               overrides: tuple[str, ...], device: str, resume: bool, quiet: bool
               ) -> dict[str, Any]:
    """Train one run; returns its summary (what `--json` prints)."""
    out, store = _check_train_arguments(head_name, store, out, resume)
    started = time.perf_counter()
    from heads.base import apply_overrides, config_to_dict
    from heads.registry import get_head
    from heads.run_folder import read_run_config
    from heads.trainer import head_from_run
    from heads.trainer import train as run_training

    sets = list(overrides) + ([f"epochs={epochs}"] if epochs is not None else [])
    if resume:
        head = head_from_run(out)
        head.config = apply_overrides(head.config, sets)
    else:
        cls = get_head(head_name)
        head = cls(apply_overrides(cls.config_cls(), sets))
        store = store or _default_store(cls.default_dataset)
    result = run_training(head, store, out, device=device, resume=resume, progress=not quiet)
    saved = read_run_config(out)  # the profile and deviations the trainer recorded
    config = config_to_dict(head.config)
    return {
        "run": str(result.run_dir), "head": head.name, "epochs_done": result.epochs_done,
        "epochs": config["epochs"], "best_epoch": result.best_epoch,
        head.metric_name: result.best_metric, "metric": head.metric_name,
        "val_split": config.get("val_split", "val"),
        "final_metrics": {k: v for k, v in result.final_metrics.items()
                          if isinstance(v, int | float)},
        "stopped_early": result.stopped_early,
        "data_wait_share": round(result.data_wait_share, 4),
        "seconds": round(time.perf_counter() - started, 2), "seed": config.get("seed"),
        "profile": saved.get("profile", "paper"), "deviations": saved.get("deviations", []),
        "approximate": saved.get("approximate", []),
        "config": {k: v for k, v in config.items() if k in
                   ("epochs", "lr", "batch_size", "schedule")},
    }


def format_train_summary(summary: dict[str, Any]) -> str:
    """The readable end of `affect train`: what ran, the best epoch and its metrics, what next."""
    from features_store.progress import duration_text
    from features_store.tables import format_table

    metric, best = summary["metric"], summary.get(summary["metric"])
    done = f"{summary['epochs_done']} of {summary['epochs']} epochs"
    if summary["stopped_early"]:
        done += " (stopped early: no improvement)"
    lines = [f"trained {summary['head']}: {done} in {duration_text(summary['seconds'])}, "
             f"seed {summary['seed']}"]
    lines.append(f"profile {fidelity_line(summary)}")
    if best is None:
        lines.append(f"no validation yet on {summary['val_split']}")
    else:
        lines.append(f"best {metric} {best:.4f} at epoch {summary['best_epoch']} on "
                     f"{summary['val_split']} (checkpoints/best.pt):")
        rows = [{"metric": k, "value": v} for k, v in summary["final_metrics"].items()]
        lines += [f"  {line}" for line in format_table(rows, ["metric", "value"]).splitlines()[1:]]
    lines.append(f"data wait {summary['data_wait_share']:.0%} of step time")
    run = summary["run"]
    lines.append(f"run folder {run}; next: affect evaluate --run {run} --split test, "
                 f"affect report {run}")
    return "\n".join(lines)


def _parse_seeds(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"--seeds {text}: expected comma-separated integers, e.g. 0,1,2") from None
    if not values or len(set(values)) != len(values):
        raise UserError(f"--seeds {text}: give distinct seeds, e.g. 0,1,2")
    return values


def _train_seeds(head_name: str | None, store: str | None, out: str | None,
                 epochs: int | None, overrides: tuple[str, ...], device: str, resume: bool,
                 quiet: bool, seeds: str, as_json: bool) -> None:
    """One run per seed under RUN/seed-<s>, then the summary beside them."""
    from pipelines.runs import SUMMARY_FILE, format_summary, summarise_seeds

    values = _parse_seeds(seeds)
    if any(o.replace(" ", "").startswith("seed=") for o in overrides):
        raise UserError("--seeds and --set seed=... both set the seed; give one of them")
    if head_name is None and not resume:
        raise UserError("--head is required (e.g. --head trm)")
    root = Path(out or f"runs/{head_name}")
    for seed in values:  # every seed's folder is checked before the first one trains
        _check_train_arguments(head_name, store, str(root / f"seed-{seed}"), resume)
    run_dirs, runs = [], []
    for seed in values:
        run_dir = root / f"seed-{seed}"
        summary = _train_one(head_name, store, str(run_dir), epochs,
                             (*overrides, f"seed={seed}"), device, resume, quiet)
        if not as_json:
            click.echo(format_train_summary(summary))
        run_dirs.append(run_dir)
        runs.append(summary)
    seeds_summary = summarise_seeds(run_dirs, root / SUMMARY_FILE)
    if as_json:
        click.echo(json.dumps({"runs": runs, "seeds": seeds_summary}))
        return
    click.echo(format_summary(seeds_summary))
    click.echo(f"wrote {root / SUMMARY_FILE}")


@click.command()
@storage_option
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Split to score (default: the run's validation "
              "split).")
@click.option("--store", default=None, help="Use this store instead of the run's.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate(run_dir: str, split: str | None, store: str | None, device: str,
             as_json: bool) -> None:
    """Score a run's best checkpoint on a split; also writes RUN/eval-<split>.json."""
    from heads.trainer import evaluate_run, read_run_config

    split = split or read_run_config(run_dir)["config"].get("val_split", "val")
    payload = evaluate_run(run_dir, split, store=store, device=device)
    _print_metrics(payload, as_json)


@click.command()
@storage_option
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--export", "export_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: RUN/predictions/<split>).")
@click.option("--store", default=None, help="Use this store instead of the run's (with "
              "--media: the store to extract the new media into; default OUT/store.zarr).")
@click.option("--device", default="auto", show_default=True)
@click.option("--media", default=None, help="New media (a file, a frame folder, a folder of "
              "files or a clips.jsonl): extract the run's streams from their provenance, then "
              "predict.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="With --media: output folder (default: RUN/predictions/media).")
@click.option("--weights", "weights", multiple=True, metavar="ENCODER=PATH",
              help="With --media: weights file for an encoder whose recorded file moved.")
def predict(run_dir: str, split: str, export_dir: str | None, store: str | None,
            device: str, media: str | None, out_dir: str | None,
            weights: tuple[str, ...]) -> None:
    """Predict a split (or new --media) with a run's best checkpoint and export the results."""
    from heads.trainer import load_run, predict_model

    if media is not None:
        from pipelines.predict_media import parse_weights, predict_media

        summary = predict_media(run_dir, media, out_dir or export_dir, store_url=store,
                                device=device, weights=parse_weights(weights))
        click.echo(f"predicted {summary['clips']} clip(s) with {summary['head']}: "
                   f"{summary['out']} (features in {summary['store']})")
        return

    run = load_run(run_dir, store=store, device=device)
    # Any split of the store, labelled or not (a split ingested only to be predicted), read
    # with what training learned (normalisation, classes): as `--media` predicts.
    data = run.head.predict_data(run.data, run.store, split)
    predictions = predict_model(run.head, run.model, data, split)
    out = Path(export_dir) if export_dir else run.paths.predictions / split
    files = run.head.export(predictions, data, split, out)
    click.echo(f"wrote {plural(len(files), 'file')} to {out}")


@click.command()
@storage_option
@click.option("--runs", required=True, help="Comma-separated run folders.")
@click.option("--split", default="test", show_default=True)
@click.option("--export", "export_dir", required=True, type=click.Path(file_okay=False))
@click.option("--store", default=None, help="Use this store instead of each run's.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the ensemble's metrics as JSON.")
def ensemble(runs: str, split: str, export_dir: str, store: str | None, device: str,
             as_json: bool) -> None:
    """Average several runs' predictions on a split and export them (scored if labelled)."""
    from heads.trainer import load_run, predict_model

    run_dirs = [r.strip() for r in runs.split(",") if r.strip()]
    if len(run_dirs) < 2:
        raise UserError(f"--runs {runs}: give at least two run folders, comma-separated")
    all_predictions = []
    first = None
    for run_dir in run_dirs:
        run = load_run(run_dir, store=store, device=device)  # one model in memory at a time
        all_predictions.append(predict_model(run.head, run.model, run.data, split))
        if first is None:
            first = (run.head, run.data)
    head, data = first
    combined = head.ensemble(all_predictions)
    files = head.export(combined, data, split, Path(export_dir))
    wrote = f"wrote {plural(len(files), 'file')} to {export_dir}"
    try:
        metrics = head.score(combined, data, split)
    except UserError:
        metrics = None  # an unlabelled split (the challenge test set): nothing to score
    from heads.trainer import _json_ready  # a confusion matrix is an array: JSON lists

    metrics = None if metrics is None else _json_ready(metrics)
    from pipelines.runs import ENSEMBLE_FILE

    # The record `affect runs ls` lists the ensemble by, beside the files it wrote.
    Path(export_dir).mkdir(parents=True, exist_ok=True)
    (Path(export_dir) / ENSEMBLE_FILE).write_text(json.dumps({
        "kind": "ensemble", "head": head.name, "runs": [str(Path(r).resolve()) for r in run_dirs],
        "split": split, "metrics": metrics, "files": len(files)}, indent=2) + "\n")
    if as_json:  # stdout is one JSON document, nothing else
        click.echo(json.dumps({"split": split, "runs": run_dirs, "export": str(export_dir),
                               "files": len(files), "metrics": metrics}, indent=2))
        return
    click.echo(wrote)
    if metrics is not None:
        _print_metrics({"split": split, "runs": run_dirs, "metrics": metrics}, False,
                       f"split {split} (ensemble of {len(run_dirs)} runs)")


@click.command("import-run")
@storage_option
@click.option("--head", "head_name", required=True, help="Head whose released model it is.")
@click.option("--from-official", "official", required=True,
              type=click.Path(dir_okay=False),
              help="The paper's released checkpoint (.pth/.pt/.ckpt or .safetensors).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New run folder.")
@click.option("--store", default=None,
              help="Feature store the run reads (default: store/<head's dataset>.zarr).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Config fields of the released model (sizes), e.g. --set hidden=512.")
def import_run(head_name: str, official: str, out: str, store: str | None,
               overrides: tuple[str, ...]) -> None:
    """Make a run folder from a paper's released checkpoint (tensors only, strictly mapped)."""
    from heads.base import apply_overrides
    from heads.registry import get_head
    from heads.trainer import import_run as make_run
    from heads.trainer import read_run_config

    cls = get_head(head_name)
    head = cls(apply_overrides(cls.config_cls(), overrides))
    run_dir = make_run(head, store or _default_store(cls.default_dataset), official, out)
    saved = read_run_config(run_dir)
    ignored = saved["imported"]["ignored"]
    click.echo(f"imported {saved['imported']['tensors']} tensors from {official} into {run_dir} "
               f"(profile {fidelity_line(saved)})")
    for key, reason in ignored.items():
        click.echo(f"  ignored {key}: {reason}")


@click.group("heads")
def heads() -> None:
    """The heads: what each trains on, the metric it is judged by, and its paper."""


@heads.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
def heads_ls(as_json: bool) -> None:
    """Name, dataset, inputs (streams it reads, labels), metric and paper of every head."""
    from features_store.tables import format_table
    from heads.registry import get_head, list_heads

    rows = []
    for name in list_heads():
        cls = get_head(name)
        recipe = cls().recipe()  # the paper's default config: the streams it reads by default
        # a head that settles its labels from the store (tpn_awm: the dataset's preset) says so
        labels = recipe.labels or ["the store dataset's labels"]
        rows.append({"name": name, "dataset": cls.default_dataset,
                     "inputs": [*recipe.features, *labels],
                     "metric": cls.metric_name, "paper": cls.paper})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    shown = [{**row, "inputs": ", ".join(row["inputs"])} for row in rows]
    click.echo(format_table(shown, ["name", "dataset", "inputs", "metric", "paper"]))
