"""A run folder's files, and the checks a command makes on its run folder and store before it
loads anything heavy.

Nothing here imports torch: `affect train` with a wrong --out or a missing store answers in
the time Python takes to start, not after torch and the heads are imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features_store.errors import UserError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


@dataclass
class RunPaths:
    """Where a run keeps its files."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def curves(self) -> Path:
        return self.root / CURVES_FILE

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    def eval_file(self, split: str) -> Path:
        return self.root / f"eval-{split}.json"


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """RUN/config.json as a dict; UserError if the folder is not a run."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.exists():
        raise UserError(f"{paths.config}: not a run folder (no config.json; train first)")
    try:
        saved = json.loads(paths.config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{paths.config}: malformed JSON ({error})") from None
    if (not isinstance(saved, dict) or not isinstance(saved.get("head"), str)
            or not isinstance(saved.get("config"), dict)
            or not isinstance(saved.get("store", ""), str)):
        raise UserError(f"{paths.config}: not a run's config (expected an object with 'head', "
                        "'config' and 'store'); the run folder is damaged")
    return saved


def check_run_folder(out: str | Path, resume: bool) -> RunPaths:
    """A new run may not overwrite one with checkpoints; a resumed one needs its last.pt."""
    paths = RunPaths(Path(out))
    if not resume and paths.last.exists():
        raise UserError(f"{paths.root}: run folder already has checkpoints; use --resume or a "
                        "new --out")
    if resume and not paths.last.exists():
        raise UserError(f"{paths.last}: nothing to resume (no last checkpoint)")
    return paths


def check_store_location(location: str | Path) -> str:
    """A local store path must exist (a URL is checked when it is opened)."""
    location = str(location)
    if "://" not in location and not Path(location).exists():
        raise UserError(f"{location}: no such store (build it with `affect extract`)")
    return location


__all__ = ["CONFIG_FILE", "CURVES_FILE", "METRICS_FILE", "RunPaths", "check_run_folder",
           "check_store_location", "read_run_config"]
