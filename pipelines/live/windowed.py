"""Heads that read a whole window, live: a sliding window over the most recent frames.

`SlidingWindow` keeps the feature rows of the frames of the last `size` places of the run's
frame grid and completes a window every `hop` places (the first once the grid reaches place
`size`), so a window lasts `size` frames' seconds even when a live source drops frames (it then
holds fewer frames). A stream the head reads at its own
rate (tpn_awm's audio: wav2vec2 rows every 20 ms, not one per frame) comes with each batch's
rows and their times; a window holds those whose times lie in its span, [first frame, last frame
+ one frame).

Each head's stepper only turns a window's rows into the data its head predicts from (the same
structures `Head.predict_data` builds from a store), then runs the head's own `predict` (through
`heads.trainer.predict_model`, as `affect predict` does) and `prediction_tables`, so a window's
prediction is what `affect predict` gives for a clip made of that window's rows:

- temporal_attention (RAPT-CLIP): the window's frames are the clip; `segment_indices` picks the
  centre frame of each of its 16 segments; one row of class probabilities per window.
- tpn_awm (AWTPN): the window is one utterance (video rows per frame, audio rows at the audio
  stream's rate), normalised with the run's training statistics; class probabilities.
- regnn (REGNN): the window is the speaker clip; `n_samples` reactions of every frame of the
  window, seeded by the window's name (`window_clip_id`), as predict seeds by clip id.

Every record carries its window's start and end time; the window and hop (seconds and frames)
are in the header line.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import numpy as np

from features_store.errors import UserError

LIVE_SPLIT = "live"


@dataclasses.dataclass
class Window:
    """The rows of one completed window."""

    rows: dict[str, np.ndarray]                       # alias -> [frames, dim], one per frame
    native: dict[str, tuple[np.ndarray, np.ndarray]]  # alias -> (times [n], rows [n, dim])
    times: np.ndarray                                 # [frames] the frames' media times
    last: int                                         # index in its batch of its last frame
    shift: float                                      # seconds per frame
    start_s: float                                    # the window's span: [start_s, end_s)
    end_s: float


class SlidingWindow:
    """The frames of the last `size` places of the frame grid, a `Window` every `hop` places.

    Windows are counted on the grid (frame time / shift from the first frame), not in frames
    taken: a live source that drops frames still gets windows of `size * shift` seconds every
    `hop * shift` seconds, holding the frames that arrived in them. A window is due once the
    grid reaches its last place; if that frame was dropped, the next frame that arrives
    completes it (holding the frames of its span).
    """

    def __init__(self, size: int, hop: int, shift: float) -> None:
        if size < 1 or hop < 1:
            raise ValueError(f"a window needs size >= 1 and hop >= 1 frames, got {size}, {hop}")
        self.size, self.hop, self.shift = size, hop, shift
        self.rows: dict[str, np.ndarray] = {}
        self.places = np.zeros(0, np.int64)  # grid place of each kept frame
        self.times = np.zeros(0)
        self.native: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.origin: float | None = None  # time of the first frame: grid place 0
        self.due = size - 1  # grid place that completes the next window
        self.completed = 0  # windows handed out so far

    def push(self, rows: dict[str, np.ndarray], times: np.ndarray,
             native: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> list[Window]:
        """Add a batch of frames in time order (`rows`: alias -> [len(times), dim]; `native`:
        alias -> (times, rows) of the batch's span); the windows it completes, oldest first."""
        times = np.asarray(times, float)
        count = len(times)
        if count == 0:
            return []
        if self.origin is None:
            self.origin = float(times[0])
        places = np.rint((times - self.origin) / self.shift).astype(np.int64)
        self.places = np.concatenate([self.places, places])
        self.times = np.concatenate([self.times, times])
        for alias, values in rows.items():
            values = np.broadcast_to(values, (count, values.shape[1]))  # per-utterance rows
            old = self.rows.get(alias)
            self.rows[alias] = values if old is None else np.concatenate([old, values])
        for alias, (row_times, values) in (native or {}).items():
            old_times, old_values = self.native.get(alias, (np.zeros(0), None))
            self.native[alias] = (np.concatenate([old_times, row_times]), values
                                  if old_values is None else np.concatenate([old_values, values]))
        windows = []
        for k, place in enumerate(places):
            # frames come in time order: frame k completes every window due up to its place
            while self.due <= place:
                window = self._window(self.due, k)
                if window is not None:  # a window whose every frame was dropped is skipped
                    windows.append(window)
                self.due += self.hop
        self.completed += len(windows)
        self._forget()
        return windows

    def _window(self, last: int, completed_by: int) -> Window | None:
        """The window whose last grid place is `last`, or None when it holds no frame."""
        picked = (self.places > last - self.size) & (self.places <= last)
        if not picked.any():
            return None
        start_s = self.origin + (last - self.size + 1) * self.shift
        end_s = self.origin + (last + 1) * self.shift
        native_rows = {}
        for alias, (row_times, values) in self.native.items():
            inside = (row_times >= start_s - 1e-6) & (row_times < end_s - 1e-6)
            native_rows[alias] = (row_times[inside], values[inside])
        return Window({a: v[picked] for a, v in self.rows.items()}, native_rows,
                      self.times[picked], completed_by, self.shift, start_s, end_s)

    def _forget(self) -> None:
        """Keep only what a later window can reach: frames (and native rows) from the first
        grid place of the next due window on."""
        first = self.due - self.size + 1
        keep = self.places >= first
        self.places, self.times = self.places[keep], self.times[keep]
        self.rows = {a: v[keep] for a, v in self.rows.items()}
        oldest = self.origin + first * self.shift - 1e-6
        self.native = {a: (t[t >= oldest], v[t >= oldest]) for a, (t, v) in self.native.items()}


def window_clip_id(start_s: float) -> str:
    """The name a window goes by as a clip (REGNN seeds its reactions by clip name)."""
    return f"window@{start_s:.3f}"


class WindowedStepper(abc.ABC):
    """A head on a sliding window of live frames (see the module docstring). Subclasses turn a
    window into the head's predict data (`head_data`), say the streams they read at the
    stream's own rate (`native_streams`; the others come one row per frame), the default
    window and hop, and what else the header should say."""

    windowed: ClassVar[bool] = True
    kind: str = "classes"  # "classes": probability bars; "va": a point (the page)
    default_window_s: ClassVar[float] = 2.0
    default_hop_s: ClassVar[float] = 0.5

    def __init__(self, run: Any, dtype: np.dtype) -> None:
        from heads.prediction_table import column_names

        self.run = run
        self.head, self.model = run.head, run.model
        self.config = run.head.config
        # `dtype` (the registry's signature) is not needed: live rows come rounded to their
        # stream's dtype, as the store holds them, and each head's data code converts them
        self.native_streams: tuple[str, ...] = ()
        self.columns = tuple(column_names(len(self.column_names()), self.column_names()))
        self.window: SlidingWindow | None = None

    # --- what a head says -------------------------------------------------------------------
    def column_names(self) -> list[str]:
        """The output's columns: the class names, or the generated channels."""
        return list(self.run.data.classes)

    @abc.abstractmethod
    def head_data(self, window: Window) -> Any:
        """The head's predict data for one clip, split LIVE_SPLIT, made of `window`'s rows."""

    def defaults(self) -> tuple[float, float]:
        """(window, hop) in seconds when --window / --hop are not given."""
        return self.default_window_s, self.default_hop_s

    def details(self) -> dict:
        """What else the header says about how this head reads a window."""
        return {}

    # --- the shared mechanism ---------------------------------------------------------------
    def set_window(self, window_s: float | None, hop_s: float | None, fps: float,
                   media_s: float | None = None, source: str = "") -> None:
        """Frames per window and hop from seconds (defaults: the head's); one line when a
        value cannot work (not positive, or a window longer than the media)."""
        default_window, default_hop = self.defaults()
        window_s = default_window if window_s is None else float(window_s)
        hop_s = default_hop if hop_s is None else float(hop_s)
        for flag, value in (("--window", window_s), ("--hop", hop_s)):
            if not np.isfinite(value) or value <= 0:
                raise UserError(f"{flag} {value:g}: must be a positive number of seconds")
        # whole frames of the grid, halves rounded up (0.5 s at 25 fps: 13 frames)
        size = max(1, int(np.floor(window_s * fps + 0.5)))
        hop = max(1, int(np.floor(hop_s * fps + 0.5)))
        if media_s is not None and size > int(np.floor(media_s * fps + 1e-6)):
            raise UserError(f"{source}: --window {window_s:g} s ({size} frames at {fps:g} fps) "
                            f"is longer than the media ({media_s:.3f} s): no window would "
                            "complete; pass a shorter --window")
        self.window = SlidingWindow(size, hop, 1.0 / fps)

    def describe(self) -> dict:
        window = self._window()
        return {"stepping": "sliding window", "window_s": round(window.size * window.shift, 6),
                "hop_s": round(window.hop * window.shift, 6), "window_frames": window.size,
                "hop_frames": window.hop, **self.details(), "columns": list(self.columns)}

    def step(self, frames: list, rows: dict[str, np.ndarray],
             native: dict[str, tuple[np.ndarray, np.ndarray]]
             ) -> list[tuple[int, np.ndarray, dict]]:
        """(index of the frame in the batch that completed the window, values, record fields)
        for every output of every window this batch completes."""
        times = np.asarray([f.time_s for f in frames])
        out = []
        for window in self._window().push(rows, times, native):
            out += self.outputs(window)
        return out

    def outputs(self, window: Window) -> list[tuple[int, np.ndarray, dict]]:
        """The head's predict on the window's rows, as records: a class table gives one record
        (the window's probabilities), a series table one per frame (and per sample)."""
        from heads.trainer import predict_model

        data = self.head_data(window)
        predictions = predict_model(self.head, self.model, data, LIVE_SPLIT)
        tables = self.head.prediction_tables(predictions, data, LIVE_SPLIT)
        (table,) = tables.values()
        span = {"window_start_s": round(window.start_s, 6),
                "window_end_s": round(window.end_s, 6)}
        if table.kind == "classes":
            return [(window.last, table.values[0], span)]
        out = []
        for r, values in enumerate(table.values):
            frame = 0 if table.time_s is None else int(np.clip(
                np.rint(table.time_s[r] / window.shift), 0, len(window.times) - 1))
            fields = {"time_s": round(float(window.times[frame]), 6)}
            if table.sample is not None:
                fields["sample"] = int(table.sample[r])
            out.append((window.last, values, {**fields, **span}))
        return out

    def _window(self) -> SlidingWindow:
        if self.window is None:
            raise RuntimeError("set_window() first")
        return self.window


class TemporalAttentionWindows(WindowedStepper):
    """RAPT-CLIP on the last frames: the window is the clip, cut into its 16 segments."""

    default_window_s = 2.0
    default_hop_s = 0.5

    def details(self) -> dict:
        return {"segments": int(self.config.segments),
                "segment_frames": "centre frame of each segment (as in evaluation)"}

    def head_data(self, window: Window) -> Any:
        from heads.temporal_attention.head import SegmentData, SegmentSplit

        c, trained = self.config, self.run.data
        face, body = window.rows[c.face_stream], window.rows[c.body_stream]
        first = np.zeros((1, 1), np.int64)  # the plain stream's first row of the one clip
        split = SegmentSplit(LIVE_SPLIT, [window_clip_id(window.start_s)],
                             labels=np.full(1, -1, np.int64), face_rows=first,
                             body_rows=first.copy(), n_frames=np.array([len(face)], np.int64))
        return SegmentData(face=face, body=body, splits={LIVE_SPLIT: split},
                           classes=trained.classes, dim=trained.dim, source=trained.source)


class TpnAwmWindows(WindowedStepper):
    """AWTPN on the last seconds as one utterance: its video rows, and its audio rows at the
    audio stream's own rate."""

    # IEMOCAP's utterances last about 4.5 s on average
    default_window_s = 4.0
    default_hop_s = 1.0

    def __init__(self, run: Any, dtype: np.dtype) -> None:
        super().__init__(run, dtype)
        self.native_streams = (self.config.audio_stream,)

    def head_data(self, window: Window) -> Any:
        from heads.tpn_awm.head import Ragged, UtteranceSplit

        c, trained = self.config, self.run.data
        _, audio = window.native[c.audio_stream]
        if len(audio) == 0:  # an audio track that ended before the video: a silent utterance
            audio = np.zeros((1, trained.audio_dim), np.float32)
        video = window.rows[c.video_stream]
        start = np.zeros(1, np.int64)
        part = UtteranceSplit(
            LIVE_SPLIT, [window_clip_id(window.start_s)], labels=np.full(1, -1, np.int64),
            audio=Ragged(audio, start, np.array([len(audio)], np.int64)),
            video=Ragged(video, start.copy(), np.array([len(video)], np.int64)))
        part.normalize(trained.norm)  # the run's training statistics, as predict_data does
        return dataclasses.replace(trained, splits={LIVE_SPLIT: part})


class RegnnWindows(WindowedStepper):
    """REGNN on the speaker's last frames: reactions for every frame of each window."""

    def __init__(self, run: Any, dtype: np.dtype) -> None:
        super().__init__(run, dtype)
        # the page draws the reaction's valence/arousal (first sample) as a point, else bars
        self.kind = "va" if {"valence", "arousal"} <= set(self.columns) else "series"

    def defaults(self) -> tuple[float, float]:
        # one REGNN window (50 frames at 25 fps), windows end to end: every frame once
        seconds = self.config.window / self._fps()
        return seconds, seconds

    def _fps(self) -> float:
        data = self.run.data
        split = next(iter(data.splits.values()))
        return 1.0 / float(split.sequences.frame_shift_s)

    def column_names(self) -> list[str]:
        from heads.prediction_table import column_names

        return column_names(self.run.data.label_dim, self.run.data.label_columns)

    def details(self) -> dict:
        return {"samples": int(self.config.n_samples),
                "seed": "per window, from its name window@START (as predict seeds by clip)"}

    def head_data(self, window: Window) -> Any:
        from heads.data import FrameSequences
        from heads.regnn.head import ReactSplit

        c, trained = self.config, self.run.data
        (v0, v1), (a0, a1) = trained.video_columns, trained.audio_columns
        frames = len(window.times)
        features = np.zeros((frames, max(v1, a1)), np.float32)
        features[:, v0:v1] = window.rows[c.video_stream]
        features[:, a0:a1] = window.rows[c.audio_stream]
        sequences = FrameSequences(
            clip_ids=[window_clip_id(window.start_s)], features=features,
            labels=np.zeros((frames, trained.label_dim), np.float32),
            mask=np.zeros(frames, bool), offsets=np.zeros(1, np.int64),
            lengths=np.array([frames], np.int64), frame_shift_s=window.shift,
            feature_slices={c.video_stream: (v0, v1), c.audio_stream: (a0, a1)})
        one = np.zeros(1, np.int64)
        split = ReactSplit(LIVE_SPLIT, sequences, speaker=one, listener=one.copy(),
                           neighbours=np.zeros((1, 1), bool), labelled=False)
        return dataclasses.replace(trained, splits={LIVE_SPLIT: split})


def media_seconds(path: str) -> float | None:
    """How long a media file's video lasts, from its container (None when it does not say)."""
    from extract.media_base import open_container, stream_end_s, stream_start_s, video_stream

    try:
        with open_container(path) as container:
            stream = video_stream(container)
            end = None if stream is None else stream_end_s(stream, container)
            return None if end is None else end - stream_start_s(stream)
    except Exception:  # an unreadable file: the reader reports it in its own words
        return None


__all__ = ["SlidingWindow", "Window", "WindowedStepper", "TemporalAttentionWindows",
           "TpnAwmWindows", "RegnnWindows", "window_clip_id", "media_seconds", "LIVE_SPLIT"]
