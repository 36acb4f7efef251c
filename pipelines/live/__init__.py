"""`affect live --run RUN --source SRC`: a trained head on a camera, a stream or a file, live.

The reader thread (`pipelines.live.source`) puts frames on the run's grid; this loop takes
them in batches, computes the run's feature rows (`pipelines.live.features`), steps the head
causally (`pipelines.live.steppers`), or on a sliding window of the most recent frames for a head
that reads a whole window (`pipelines.live.windowed`), and writes one JSON line per prediction
(media time, prediction, a window's start and end, end-to-end latency from the arrival of the
frame that completed it), to stdout or a file and to the page
(`pipelines.live.page`). A file read as fast as possible is taken a full extraction batch at a
time (the batches extraction encodes, so the same values); a live source is taken as it comes.

It stops at the end of the media, after `idle_timeout_s` of silence from a network source, or
on Ctrl-C (at the end of a source, a stepper that answers a segment at a time first answers
its last, shorter segment), and then writes one summary line: frames, predictions, latency
p50/p95, drops and the real-time factor (media seconds per wall second while running; >= 1
keeps up).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from features_store.errors import UserError

LIVE_QUEUE = 4  # frames a live source may have waiting before the oldest is dropped


@dataclasses.dataclass
class LiveStats:
    frames: int = 0
    predictions: int = 0
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.perf_counter)
    last_done: float | None = None  # when the last prediction was made
    first_time_s: float | None = None
    last_time_s: float | None = None

    def realtime_factor(self, fps: float) -> float:
        """Media seconds handled per wall second, from the first frame to the last output."""
        wall = (self.last_done or time.perf_counter()) - self.started
        return (self.frames / fps) / wall if wall > 0 else 0.0

    def latency(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None


def live(run_dir: str, source: str, *, audio_source: str | None = None, realtime: bool = False,
         idle_timeout_s: float = 5.0, device: str = "cpu", weights: dict[str, str] | None = None,
         text: str | None = None, audio_window_s: float = 1.0,
         audio_lookahead_s: float = 0.05, out: IO[str] | None = None,
         serve: str | None = None, on_ready: Callable[[str], None] | None = None,
         window_s: float | None = None, hop_s: float | None = None) -> dict:
    """Run a trained head on `source` until it ends; returns the summary (also written).
    `window_s`/`hop_s`: a windowed head's sliding window (default: the head's)."""
    from extract.runner import resolve_device
    from heads.trainer import load_run, read_run_config
    from pipelines.live.features import LiveFeatures
    from pipelines.live.source import Frame, FrameQueue, Reader, parse_source
    from pipelines.live.steppers import stepper_for
    from pipelines.live.windowed import WindowedStepper, media_seconds

    out = out or sys.stdout
    spec = parse_source(source)
    audio_spec = parse_source(audio_source) if audio_source else None
    if audio_spec is not None and spec.is_file and not realtime:
        # a separate audio source is put on the video clock by the wall clock (two sources share
        # no timestamps), which a file read faster than its own pace does not keep
        raise UserError(f"{source}: --audio-source {audio_source} is placed on the video by the "
                        "wall clock; play the file at its own pace with --realtime")
    saved = read_run_config(run_dir)
    dev = resolve_device(device)
    run = load_run(run_dir, device=dev)
    features = LiveFeatures(run, saved, dev, weights or {}, text, audio_window_s,
                            audio_lookahead_s)
    dtype = np.result_type(*(s.dtype for s in features.streams), np.float16)
    stepper = stepper_for(run, dtype)
    windowed = isinstance(stepper, WindowedStepper)
    if windowed:
        stepper.set_window(window_s, hop_s, features.fps,
                           media_seconds(spec.url) if spec.is_file else None, source)
    elif window_s is not None or hop_s is not None:
        steps = "segment by segment" if getattr(stepper, "holds", 0) else "frame by frame"
        raise UserError(f"--window/--hop: head {run.head.name} runs {steps}, not on windows")
    native = stepper.native_streams if windowed else ()
    fast = spec.is_file and not realtime
    queue = FrameQueue(capacity=max(features.batch_size, LIVE_QUEUE) if fast else LIVE_QUEUE,
                       drop_oldest=not fast)
    page = None
    if serve:
        from pipelines.live.page import LivePage

        page = LivePage(serve, title=f"{run.head.name} - {source}")
    if on_ready:
        on_ready(f"live: reading {spec.url}")
    reader = Reader(spec, queue, features.fps, features.decode_size, features.sample_rates,
                    # the audio of every queued frame (a batch of a 2 fps run spans 16 s)
                    audio_keep_s=audio_window_s + 2.0 + (queue.capacity + 2) / features.fps,
                    idle_timeout_s=idle_timeout_s, realtime=realtime and spec.is_file,
                    audio_spec=audio_spec)
    header = {"run": str(run_dir), "head": run.head.name, "source": source,
              "audio_source": audio_source, "fps": features.fps, "text": text,
              "streams": [s.alias for s in features.streams],
              "audio_window_s": audio_window_s if features.sample_rates else None,
              "audio_lookahead_s": audio_lookahead_s if features.sample_rates else None,
              "mode": "as fast as possible" if fast else "live", **stepper.describe()}
    _write(out, header)
    if page:
        page.publish({"header": header})
    stats = LiveStats()
    # The frames of earlier batches a stepper's answer may still name (a negative index: -1 is
    # the frame just before the batch); a segment-wise stepper answers a segment late.
    earlier: deque[Frame] = deque(maxlen=int(getattr(stepper, "holds", 0)))

    def emit(predictions: list[tuple], batch: list[Frame]) -> None:
        """One JSON line (and page update) per prediction, (index, values[, fields]): latency
        from the arrival of the frame `index` names (the one that completed the prediction);
        `fields`, a windowed head's record fields (its window's span; a frame's own time and
        sample for a head that outputs every frame of the window)."""
        done = stats.last_done
        for k, (index, values, *more) in enumerate(predictions):
            fields = dict(more[0]) if more else {}
            frame = batch[index] if index >= 0 else earlier[index]
            latency = (done - frame.arrived) * 1000
            stats.latencies_ms.append(latency)
            stats.predictions += 1
            record = {"time_s": round(fields.pop("time_s", frame.time_s), 6), **fields,
                      **{c: float(v) for c, v in zip(stepper.columns, values)},
                      "latency_ms": round(latency, 2), "drops": queue.dropped,
                      "rtf": round(stats.realtime_factor(features.fps), 3)}
            _write(out, record)
            if page:
                page.publish({"prediction": record, "kind": stepper.kind,
                              "columns": list(stepper.columns),
                              "p50": stats.latency(50), "p95": stats.latency(95)},
                             image=frame.image if k == len(predictions) - 1 else None)

    reader.start()
    end_reason = None
    try:
        while True:
            batch = queue.take(features.batch_size if fast else LIVE_QUEUE,
                               at_least=features.batch_size if fast else 1)
            if not batch:
                if queue.finished or not reader.is_alive():
                    break
                continue
            if stats.first_time_s is None:
                stats.started = batch[0].arrived
                stats.first_time_s = batch[0].time_s
            rows = features.rows(batch, reader.audio, queue, skip=native)
            if windowed:  # a window needs its frames' times, and some streams at their rate
                predictions = stepper.step(batch, rows, features.native_rows(
                    native, batch, reader.audio, queue))
            else:
                predictions = stepper(rows, len(batch))
            stats.last_done = time.perf_counter()
            stats.frames += len(batch)
            stats.last_time_s = batch[-1].time_s
            emit(predictions, batch)
            earlier.extend(batch)
        # A stepper that predicts a segment once it is complete predicts the last, shorter one
        # when the source has ended (not on Ctrl-C: a segment cut anywhere is not the head's).
        if hasattr(stepper, "finish"):
            predictions = stepper.finish()
            stats.last_done = time.perf_counter()
            emit(predictions, [])
    except KeyboardInterrupt:
        end_reason = "interrupted"
    finally:
        reader.close()
    if reader.error is not None:
        raise reader.error  # a UserError is one line; anything else is a bug with its traceback
    summary = {"frames": stats.frames, "predictions": stats.predictions,
               "latency_p50_ms": _round(stats.latency(50)),
               "latency_p95_ms": _round(stats.latency(95)), "drops": queue.dropped,
               "realtime_factor": round(stats.realtime_factor(features.fps), 3),
               "media_s": round(stats.frames / features.fps, 3),
               # audio that reached the encoders: a dead microphone shows here as 0
               **({"audio_s": round(max(b.received / b.sample_rate
                                        for b in reader.audio.values()), 3)}
                  if reader.has_audio else {}),
               "end": end_reason or reader.stats.end_reason or "end of media"}
    _write(out, {"summary": summary})
    if page:
        page.publish({"summary": summary})
        page.close()
    return summary


def summary_line(summary: dict) -> str:
    """The summary as one line for a person."""
    p50, p95 = summary["latency_p50_ms"], summary["latency_p95_ms"]
    return (f"live: {summary['frames']} frames, {summary['predictions']} predictions, latency "
            f"p50 {p50} ms p95 {p95} ms, {summary['drops']} dropped, real-time factor "
            f"{summary['realtime_factor']} ({summary['end']})")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _write(out: IO[str], record: dict[str, Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


__all__ = ["live", "summary_line", "LiveStats"]
