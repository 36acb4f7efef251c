"""A run's feature streams computed on live frames, as extraction would compute them.

The encoders are rebuilt from the training store's provenance and checked against the keys the
run was trained on (`pipelines.predict_media`: one line when a key cannot be reproduced). Video
streams encode each frame through the same preprocessing and batch call as extraction; a stream
of crops (RAER's face and body) encodes whole frames through its crop's transform, as extraction
encodes a clip without boxes, since a live source has none. Audio
streams encode a rolling window of the video clock's recent audio, cut on the encoder's own hop
grid, and are put onto the frames' times with the store's alignment rule; an audio encoder that
looks at whole segments (Dasheng's 10 s) therefore sees less context live than in extraction,
so its rows, unlike the video rows, are close to but not equal to the extracted ones. A text
stream is one fixed sentence (or a transcript file's text), encoded once. A head that reads an
audio stream at the stream's own rate (tpn_awm) gets its rows unaligned (`native_rows`): those
of the same rolling encoding whose times fall in the batch's span.

Every row is rounded to the dtype its stream is stored in, as the values a head reads from the
store are.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection

import numpy as np
import torch

from extract.decode_ahead import _shared_preprocess, spec_for
from features_store.align import to_timeline
from features_store.errors import UserError
from heads.data import auto_method
from pipelines.live.source import AudioBuffer, Frame, FrameQueue
from pipelines.predict_media import check_same_streams, stream_requests


@dataclasses.dataclass
class LiveStream:
    alias: str           # the name the head's config reads it by
    plan: object         # extract.plan.StreamPlan
    options: object      # extract.report.ExtractOptions it was extracted with

    @property
    def modality(self) -> str:
        return self.plan.modality

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.plan.info.dtype)


class LiveFeatures:
    """Rows of every stream a run reads, for batches of frames on the run's grid."""

    def __init__(self, run, saved: dict, device: str, weights: dict[str, str],
                 text: str | None, audio_window_s: float, audio_lookahead_s: float) -> None:
        streams = saved.get("streams") or {}
        alias_of = {key: alias for alias, key in streams.items()}
        requests = stream_requests(run.store, list(streams.values()), weights, device)
        all_plans = check_same_streams(requests, device)
        self.streams = [LiveStream(alias_of[r.info.key], plans[0], r.options)
                        for r, plans in zip(requests, all_plans)]
        self.device = device
        self.audio_window_s = audio_window_s
        self.audio_lookahead_s = audio_lookahead_s
        video = [s for s in self.streams if s.modality == "video"]
        if not video:
            raise UserError("the run reads no video stream: live needs one for its frame clock")
        rates = {s.plan.fps for s in video}
        if len(rates) > 1:
            raise UserError(f"the run's video streams were extracted at different rates "
                            f"({sorted(rates)}); live reads one frame grid")
        self.fps = float(rates.pop() or 25.0)
        sizes = {s.options.decode_size for s in video}
        self.decode_size = sizes.pop() if len(sizes) == 1 else None
        self.resize_with = video[0].options.resize_with
        self.batch_size = int(video[0].options.batch_size)
        self.text_rows: dict[str, np.ndarray] = {}
        for stream in self.streams:
            if stream.modality != "text":
                continue
            if not text:
                raise UserError(f"the run reads text stream {stream.alias}: pass --text "
                                "SENTENCE or --transcript FILE")
            row = np.asarray(stream.plan.encoder.encode_text([text]), np.float32)[0]
            self.text_rows[stream.alias] = row.astype(stream.dtype).astype(np.float32)

    @property
    def sample_rates(self) -> list[int]:
        return sorted({int(s.plan.encoder.spec.sample_rate) for s in self.streams
                       if s.modality == "audio"})

    def rows(self, frames: list[Frame], audio: dict[int, AudioBuffer],
             queue: FrameQueue, skip: Collection[str] = ()) -> dict[str, np.ndarray]:
        """alias -> [len(frames), dim] float32 (per-utterance streams: [1, dim]), for every
        stream but those in `skip` (read at their own rate: `native_rows`)."""
        out: dict[str, np.ndarray] = {}
        images = np.stack([f.image for f in frames])
        times = np.asarray([f.time_s for f in frames])
        shift = 1.0 / self.fps
        with torch.inference_mode():
            for stream in self.streams:
                if stream.alias in skip:
                    continue
                if stream.modality == "video":
                    spec = spec_for(stream.plan)
                    if stream.plan.crop:
                        # A live source has no boxes: each whole frame through the crop's own
                        # transform, as extraction encodes a clip without boxes.
                        inputs = torch.cat([spec.preprocess(image[None]) for image in images])
                    else:
                        inputs = _shared_preprocess(images, [spec], self.resize_with)[spec.key]
                    rows = stream.plan.encoder.encode_batch(inputs).float().cpu().numpy()
                elif stream.modality == "audio":
                    rows = self._audio_rows(stream, times, shift, audio, queue)
                else:
                    out[stream.alias] = self.text_rows[stream.alias][None, :]
                    continue
                out[stream.alias] = rows.astype(stream.dtype).astype(np.float32)
        return out

    def _audio_rows(self, stream: LiveStream, times: np.ndarray, shift: float,
                    audio: dict[int, AudioBuffer], queue: FrameQueue) -> np.ndarray:
        buffer = audio[int(stream.plan.encoder.spec.sample_rate)]
        return audio_rows(stream.plan, times, shift, buffer, queue, self.audio_window_s,
                          self.audio_lookahead_s)

    def native_rows(self, aliases: Collection[str], frames: list[Frame],
                    audio: dict[int, AudioBuffer], queue: FrameQueue
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """alias -> (row times, rows) of each audio stream in `aliases` at its own rate: the
        rows whose times lie in the frames' span [first frame, last frame + one frame), so
        consecutive batches share no row and leave none out."""
        out = {}
        shift = 1.0 / self.fps
        span = (frames[0].time_s, frames[-1].time_s + shift)
        for stream in self.streams:
            if stream.alias not in aliases:
                continue
            if stream.modality != "audio":
                raise ValueError(f"stream {stream.alias} is {stream.modality}: only audio rows "
                                 "have a rate of their own here")
            buffer = audio[int(stream.plan.encoder.spec.sample_rate)]
            times, rows = native_audio_rows(stream.plan, span, buffer, queue,
                                            self.audio_window_s, self.audio_lookahead_s)
            out[stream.alias] = (times, rows.astype(stream.dtype).astype(np.float32))
        return out


def audio_rows(plan, times: np.ndarray, shift: float, buffer: AudioBuffer,
               queue: FrameQueue | None, window_s: float, lookahead_s: float) -> np.ndarray:
    """An audio stream's rows on the frames' `times` (spaced `shift`), as the store's alignment
    would put the extracted rows there: the rows come from encoding the buffer's audio from
    `window_s` before the first frame (on the encoder's hop grid) to `lookahead_s` past the last
    frame's pooling window (an encoder's window reaching past its hop needs that much)."""
    row_shift = float(plan.info.frame_shift_s)
    start = float(times[0]) - shift / 2 - window_s
    end = float(times[-1]) + shift / 2 + row_shift + lookahead_s
    encoded = _encode_span(plan, start, end, buffer, queue)
    if encoded is None:  # no audio (yet): silence rows, as a muted microphone
        return np.zeros((len(times), plan.info.dim), np.float32)
    start_s, rows = encoded
    aligned, _ = to_timeline(rows, start_s, row_shift, times, shift,
                             auto_method(row_shift, shift))
    return aligned


def native_audio_rows(plan, span: tuple[float, float], buffer: AudioBuffer,
                      queue: FrameQueue | None, window_s: float, lookahead_s: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """An audio stream's rows at its own rate whose times (row i at t0 + i * frame_shift_s, as
    the store times them) lie in `span` [start, end): ([n] times, [n, dim] rows). Encoded from
    `window_s` before the span, on the encoder's hop grid, to `lookahead_s` past the last row's
    own window; with no audio (yet), silence rows on the grid of the span's start."""
    row_shift = float(plan.info.frame_shift_s)
    start, end = float(span[0]), float(span[1])
    encoded = _encode_span(plan, start - window_s, end + row_shift + lookahead_s, buffer, queue)
    if encoded is not None:
        start_s, rows = encoded
        times = start_s + np.arange(len(rows)) * row_shift
        # a microsecond covers the rounding of times computed two ways
        inside = (times >= start - 1e-6) & (times < end - 1e-6)
        if inside.any():
            return times[inside], rows[inside].astype(np.float32)
    # no audio there (none yet, a muted microphone, a track that ended before the video):
    # silence rows on the span's grid, as `audio_rows` gives silence
    times = start + np.arange(max(1, int(np.ceil((end - start) / row_shift - 1e-9)))) * row_shift
    return times, np.zeros((len(times), plan.info.dim), np.float32)


def _encode_span(plan, start: float, end: float, buffer: AudioBuffer,
                 queue: FrameQueue | None) -> tuple[float, np.ndarray] | None:
    """(time of the first row, rows) of the buffer's audio from `start` (moved back onto the
    buffer's hop grid, the grid extraction's rows lie on) to `end`, rounded to the stream's
    dtype; None when there is no audio (yet) or too little for a row."""
    row_shift = float(plan.info.frame_shift_s)
    if queue is not None:
        buffer.wait_until(end, queue, limit_s=1.0)
    if buffer.start_s is None:
        return None
    hops = max(0, math.floor((start - buffer.start_s) / row_shift + 1e-9))
    start_s, samples = buffer.window(buffer.start_s + hops * row_shift, end)
    rows = plan.encoder.encode_audio(samples)
    if len(rows) == 0:
        return None
    return start_s, rows.astype(np.dtype(plan.info.dtype))
