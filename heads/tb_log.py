"""TensorBoard mirror of a run's metrics.jsonl records (optional: needs `tensorboard`).

metrics.jsonl stays the source of truth; this writes the same scalars under RUN/tb/ so a
TensorBoard pointed at a folder of runs compares them (`tensorboard --logdir runs`), and, when
the run ends, its config and final metrics as hparams, so the HParams tab lines runs up by
setting. Without the `tensorboard` package (the `[tensorboard]` extra) it does nothing.

Only metrics go in as scalars: a count among the validation results (REGNN's `speakers`, an int
by the trainer's JSON convention) stays in metrics.jsonl, and the learning rate is logged once
per step however many records share that step.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class ScalarLog:
    """Scalars of metrics records into a TensorBoard event file under `log_dir`.

    `purge_step` (the resumed run's global step) drops events an interrupted run wrote past
    the checkpoint it resumes from, as metrics.jsonl is truncated on resume.
    """

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        self.writer = None
        if tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        self._lr_logged_at: int | None = None

    def record(self, record: dict[str, Any], lrs: list[float] | None = None) -> None:
        """One metrics.jsonl record (kind step, epoch or eval) as scalars at its step."""
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        kind = record.get("kind")
        values: dict[str, float] = {}
        if kind == "step":
            values["train/loss"] = record["loss"]
            busy = record["data_wait_s"] + record["compute_s"]
            values["train/data_wait_share"] = record["data_wait_s"] / busy if busy > 0 else 0.0
        elif kind == "epoch":
            values["epoch/train_loss"] = record["train_loss"]
            values["epoch/data_wait_share"] = record["data_wait_share"]
            values["epoch/steps_per_s"] = record["steps_per_s"]
        elif kind == "eval":
            split = record.get("split", "val")
            for name, value in record["metrics"].items():
                if _is_metric(value):
                    values[f"{split}/{name}"] = value
        if lrs and self._lr_logged_at != step:  # a step record and its epoch record share it
            self._lr_logged_at = step
            for k, lr in enumerate(lrs):
                values[f"lr/group{k}"] = lr
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def hparams(self, config: dict[str, Any], final_metrics: dict[str, Any], split: str,
                step: int) -> None:
        """The run's config and its final (best checkpoint) metrics on `split`, as TensorBoard's
        HParams tab reads them: one session whose metrics are `hparam/<split>/<name>` scalars."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        metrics = {f"hparam/{split}/{name}": float(value)
                   for name, value in final_metrics.items() if _is_metric(value)}
        settings = {name: _hparam_value(value) for name, value in config.items()}
        experiment, session_start, session_end = hparams(settings, metrics)
        for summary in (experiment, session_start, session_end):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _is_metric(value: Any) -> bool:
    """A float result; ints are counts (how many speakers were scored), bools flags."""
    return isinstance(value, float)


def _hparam_value(value: Any) -> bool | int | float | str:
    """TensorBoard takes numbers, strings and bools; a list or a None is shown as its JSON."""
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value)
