"""TensorBoard mirror of a run's metrics.jsonl records (optional: needs `tensorboard`).

metrics.jsonl stays the source of truth; this writes the same scalars under RUN/tb/ so a
TensorBoard pointed at a folder of runs compares them (`tensorboard --logdir runs`). Without the
`tensorboard` package (the `[tensorboard]` extra) it does nothing.
"""

from __future__ import annotations

import importlib.util
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
                if isinstance(value, int | float):
                    values[f"{split}/{name}"] = value
        for k, lr in enumerate(lrs or []):
            values[f"lr/group{k}"] = lr
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
