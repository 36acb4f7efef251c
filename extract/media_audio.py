"""Stream audio as mono float32 at an encoder's sample rate, from audio files or video containers.

FFmpeg's resampler changes the rate; channels are mixed to mono here as their plain mean, because
libswresample's own stereo-to-mono matrix scales each side by 1/sqrt(2), which makes the mono
louder than either channel for float output.

Sample ``j`` of the output is at ``t_first + j / sample_rate``, where ``t_first`` is the
presentation time of the first decoded audio frame (after a seek to ``start_s``, the frame at or
before it). ``start_s``/``end_s`` cut on that clock, so the output starts at
``max(start_s, t_first)`` and holds ``round((end_s - start) * sample_rate)`` samples when the
audio covers the range. Gaps inside the stream are not filled. An audio track that starts later
than the video (ffprobe's ``start_time`` > 0) therefore starts later here too:
`iter_timed_audio` says at what media time each chunk begins, and the extraction runner stores
that as the stream's ``t0``, so aligned reads put audio and video at the same moment.

Truncated or corrupt audio: chunks decoded before the problem are yielded, then `MediaError`
(stage "decode_audio") is raised; that covers FFmpeg errors and streams that stop more than
max(0.5 s, 2 %) before the length the container declares.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from extract.media_base import (
    AV_ERRORS,
    MediaError,
    _ffmpeg_reason,
    audio_stream,
    decode_from,
    open_container,
    stream_end_s,
    stream_start_s,
)

# Decode this much before a range's start so lossy decoders have settled when it begins.
_PREROLL_S = 0.25


class _Chunker:
    """Collects mono samples within [lo, hi) of the output clock into chunks of n samples."""

    def __init__(self, chunk_n: int) -> None:
        self.chunk_n = chunk_n
        self.parts: list[np.ndarray] = []
        self.pending = 0
        self.position = 0  # output samples seen so far, kept or not
        self.emitted = 0
        self.first_s = 0.0  # media time of output sample 0 (before cutting at ``lo``)
        self.sample_rate = 1
        self.lo = 0
        self.hi: int | None = None

    def push(self, samples: np.ndarray) -> Iterator[tuple[float, np.ndarray]]:
        begin, end = self.position, self.position + len(samples)
        self.position = end
        keep_from = max(begin, self.lo)
        keep_to = end if self.hi is None else min(end, self.hi)
        if keep_to > keep_from:
            self.parts.append(samples[keep_from - begin:keep_to - begin])
            self.pending += keep_to - keep_from
        while self.pending >= self.chunk_n:
            yield self._take(self.chunk_n)

    def done(self) -> bool:
        return self.hi is not None and self.position >= self.hi

    def finish(self) -> Iterator[tuple[float, np.ndarray]]:
        if self.pending:
            yield self._take(self.pending)

    def _take(self, n: int) -> tuple[float, np.ndarray]:
        joined = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        chunk, rest = joined[:n], joined[n:]
        self.parts = [rest] if len(rest) else []
        self.pending = len(rest)
        time_s = self.first_s + (self.lo + self.emitted) / self.sample_rate
        self.emitted += n
        return time_s, np.ascontiguousarray(chunk, dtype=np.float32)


def _mono(frame: av.AudioFrame) -> np.ndarray:
    planes = frame.to_ndarray()  # fltp: [channels, samples]
    if planes.ndim == 1:
        return planes.astype(np.float32, copy=False)
    return planes[0] if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32)


def iter_audio(
    source: str | Path,
    sample_rate: int,
    chunk_s: float = 30.0,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Iterator[np.ndarray]:
    """Decode the (first) audio stream of ``source`` into mono float32 chunks at ``sample_rate``.

    Chunks hold ``round(chunk_s * sample_rate)`` samples, the last one fewer. Memory is bounded
    by one chunk whatever the length of the file. Raises MediaError (stages "open", "empty",
    "no_audio", "decode_audio").
    """
    for _, samples in iter_timed_audio(source, sample_rate, chunk_s, start_s, end_s):
        yield samples


def iter_timed_audio(
    source: str | Path,
    sample_rate: int,
    chunk_s: float = 30.0,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """`iter_audio`, each chunk with the media time (seconds) of its first sample."""
    source = Path(source)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not chunk_s > 0:
        raise ValueError(f"chunk_s must be positive, got {chunk_s}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
    if source.is_dir():
        raise MediaError(source, "no_audio", "is a frame folder, which has no audio")
    chunker = _Chunker(max(1, round(chunk_s * sample_rate)))

    with open_container(source) as container:
        stream = audio_stream(container)
        if stream is None:
            raise MediaError(source, "no_audio", "has no audio stream")
        expected_end = stream_end_s(stream, container)
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        first_s: float | None = None
        decoded_s = 0.0  # input duration decoded, at the input rate
        try:
            for frame in decode_from(container, stream, start_s, "decode_audio",
                                     preroll_s=_PREROLL_S):
                if first_s is None:
                    first_s = frame.time if frame.time is not None else stream_start_s(stream)
                    chunker.first_s, chunker.sample_rate = first_s, sample_rate
                    if start_s is not None:
                        chunker.lo = max(0, round((start_s - first_s) * sample_rate))
                    if end_s is not None:
                        chunker.hi = max(0, round((end_s - first_s) * sample_rate))
                decoded_s += frame.samples / frame.sample_rate
                for out in resampler.resample(frame):
                    yield from chunker.push(_mono(out))
                if chunker.done():
                    break
            else:
                for out in resampler.resample(None):
                    yield from chunker.push(_mono(out))
        except AV_ERRORS as exc:
            raise MediaError(source, "decode_audio",
                             f"audio decoding failed after {decoded_s:.3f} s: "
                             f"{_ffmpeg_reason(exc)}") from exc
        yield from chunker.finish()

        range_text = "" if start_s is None and end_s is None else \
            f" in [{start_s or 0:.3f}, {'end' if end_s is None else f'{end_s:.3f}'}) s"
        if chunker.emitted == 0:
            raise MediaError(source, "empty", f"no audio samples decoded{range_text}")
        if first_s is None or expected_end is None or chunker.done():
            return
        wanted_end = expected_end if end_s is None else min(end_s, expected_end)
        decoded_end = first_s + decoded_s
        tolerance = max(0.5, 0.02 * (expected_end - (start_s or 0.0)))
        if decoded_end < wanted_end - tolerance:
            raise MediaError(source, "decode_audio",
                             f"audio stream stops at {decoded_end:.3f} s but the container "
                             f"declares {expected_end:.3f} s; the file looks truncated")


def load_audio(
    source: str | Path,
    sample_rate: int,
    start_s: float | None = None,
    end_s: float | None = None,
) -> np.ndarray:
    """The whole (or the ``[start_s, end_s)`` part of the) audio as one mono float32 array."""
    chunks = list(iter_audio(source, sample_rate, chunk_s=60.0, start_s=start_s, end_s=end_s))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
