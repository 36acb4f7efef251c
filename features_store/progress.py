"""Progress for logs: a line every N seconds when stderr is not a terminal.

tqdm draws a bar on a terminal and, rightly, nothing when stderr is a file or a pipe (a SLURM
log, CI, `nohup`), which leaves a long extraction silent for its whole run. `ProgressLines`
prints ``extract: 120/900 clips, 30012 frames (41.3 frames/s), 12m05s elapsed, ~1h18m left``
every ``every_s`` seconds from a timer thread, so a line comes even while one long clip is
being encoded. Training prints the same lines per epoch, counting batches
(``trm epoch 3/10: 120/400 batches, 1m05s elapsed, ~2m10s left``). It lives beside the store
because extraction and the heads both use it and neither may import the other.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def duration_text(seconds: float) -> str:
    """``12s``, ``3m05s``, ``1h18m``: how long, as a person reads it in a log."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLines:
    """A timer thread that prints how far a run is; `update` is called as clips finish."""

    def __init__(self, total: int, every_s: float, desc: str = "extract",
                 stream: TextIO | None = None, unit: str = "clips",
                 count_frames: bool = True, closing_line: bool = True) -> None:
        if not every_s > 0:
            raise ValueError(f"progress interval must be positive, got {every_s}")
        self.total, self.every_s, self.desc = total, every_s, desc
        self.unit, self.count_frames = unit, count_frames
        self.closing_line = closing_line  # off where the caller prints its own summary line
        self.stream = stream if stream is not None else sys.stderr
        self.clips = 0
        self.frames = 0
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-lines", daemon=True)

    def update(self, clips: int, frames: int = 0) -> None:
        self.clips += clips
        self.frames += frames

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        text = f"{self.desc}: {self.clips}/{self.total} {self.unit}, "
        if self.count_frames:
            text += f"{self.frames} frames ({self.frames / max(elapsed, 1e-9):.1f} frames/s), "
        text += f"{duration_text(elapsed)} elapsed"
        if 0 < self.clips < self.total:
            text += f", ~{duration_text(elapsed / self.clips * (self.total - self.clips))} left"
        return text

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> ProgressLines:
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        # a log ends with where the run ended, not with the last tick
        if exc_type is None and self.closing_line:
            print(self.line(), file=self.stream, flush=True)


def wants_progress_lines(stream: TextIO | None = None) -> bool:
    """True where a progress bar would not show: stderr is not a terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


__all__ = ["ProgressLines", "duration_text", "wants_progress_lines"]
