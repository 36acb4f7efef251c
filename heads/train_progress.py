"""What a training run tells the person watching it, on stderr.

One readable line per epoch: train loss, each validation metric, the best so far and its epoch,
seconds per epoch and the time left, e.g.

    trm epoch 3/10 | train_loss 0.4123 | val ccc_mean 0.2301, ccc_valence 0.2100 |
    best ccc_mean 0.2301 (epoch 3) | 12.3 s/epoch | ETA 1m26s

(one line). Within an epoch: a bar on a terminal; in a log (stderr a file or a pipe: SLURM,
CI, `nohup`) no bar redraws, but the timed lines extraction prints, counting batches. Notes such
as where a resumed run continues are printed either way; `enabled=False` (`--quiet`) keeps only
those.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from features_store.progress import ProgressLines, duration_text, wants_progress_lines

PROGRESS_EVERY_S = 30.0  # a line this often within a long epoch when stderr is a log


@dataclass
class EpochSummary:
    """How one finished epoch went (epochs count from 1)."""

    epoch: int
    epochs: int
    train_loss: float
    val_metrics: dict[str, Any] | None
    metric_name: str
    best_value: float | None
    best_epoch: int | None
    seconds: float
    eta_s: float | None


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)  # a count (how many speakers were scored)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def epoch_line(summary: EpochSummary, head_name: str = "") -> str:
    """The epoch's one line (see the module docstring)."""
    prefix = f"{head_name} " if head_name else ""
    parts = [f"{prefix}epoch {summary.epoch}/{summary.epochs}",
             f"train_loss {_number(summary.train_loss)}"]
    if summary.val_metrics is not None:
        # Scalars only: a confusion matrix belongs in the report, not in a log line.
        shown = [f"{name} {_number(value)}" for name, value in summary.val_metrics.items()
                 if isinstance(value, int | float)]
        parts.append("val " + ", ".join(shown) if shown else "val -")
    if summary.best_value is not None:
        parts.append(f"best {summary.metric_name} {_number(summary.best_value)} "
                     f"(epoch {summary.best_epoch})")
    parts.append(f"{summary.seconds:.1f} s/epoch")
    if summary.eta_s is not None:
        parts.append(f"ETA {duration_text(summary.eta_s)}")
    return " | ".join(parts)


class TrainProgress:
    """Prints a run's notes, per-epoch lines and within-epoch progress to `stream` (stderr)."""

    def __init__(self, head_name: str = "", enabled: bool = True, stream: TextIO | None = None,
                 every_s: float = PROGRESS_EVERY_S) -> None:
        self.head_name = head_name
        self.enabled = enabled
        self.stream = stream
        self.every_s = every_s

    @property
    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    @property
    def on_terminal(self) -> bool:
        return not wants_progress_lines(self._out)

    def note(self, text: str) -> None:
        """A line shown even when quiet (where a resumed run continues)."""
        self._write(text)

    def epoch_done(self, summary: EpochSummary) -> None:
        if self.enabled:
            self._write(epoch_line(summary, self.head_name))

    @contextlib.contextmanager
    def epoch(self, epoch: int, epochs: int, n_batches: int | None
              ) -> Iterator[Callable[[float], None]]:
        """Yields `advance(loss)`, called after each batch of epoch `epoch` (from 1)."""
        desc = f"{self.head_name} epoch {epoch}/{epochs}".strip()
        if not self.enabled:
            yield lambda loss: None
        elif self.on_terminal:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_batches, desc=desc, file=self._out, leave=False,
                       dynamic_ncols=True)

            def advance(loss: float) -> None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")

            try:
                yield advance
            finally:
                bar.close()
        elif n_batches:
            lines = ProgressLines(n_batches, self.every_s, desc, self._out, unit="batches",
                                  count_frames=False, closing_line=False)
            with lines:
                yield lambda loss: lines.update(1)
        else:  # a log, and no batch count to say how far: the epoch line will say it
            yield lambda loss: None

    def _write(self, text: str) -> None:
        if self.on_terminal:
            from tqdm import tqdm

            tqdm.write(text, file=self._out)  # above an active bar, never glued into it
        else:
            print(text, file=self._out, flush=True)


__all__ = ["EpochSummary", "TrainProgress", "epoch_line"]
