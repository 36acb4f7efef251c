"""The optional torchcodec decoder (`--decoder torchcodec`, or `torchcodec:cuda` for NVDEC).

It feeds the same resampling grid as the PyAV decoder (`extract.media_video`), so a clip gives
the same timestamps and, where both call FFmpeg's colour conversion the same way, the same
frames (the test compares them on the extraction tests' media). torchcodec needs the system
FFmpeg shared libraries and a build that matches the installed torch (0.11 for torch 2.11);
without them this module says so in one line.

Differences from the PyAV path, both deliberate:
- torchcodec indexes the whole stream first (``seek_mode="exact"``), so frame indices are
  always known; to match PyAV's output the index is reported as -1 after a seek to ``start_s``.
- it decodes from the start even when ``start_s`` is set (decoding is exact, just slower on
  long clips with a late start).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from extract.media_base import MediaError
from features_store.errors import UserError

CHUNK = 32  # frames decoded per call


def _decoder_class():
    try:
        from torchcodec.decoders import VideoDecoder
    except (ImportError, RuntimeError, OSError) as exc:
        raise UserError("--decoder torchcodec needs the torchcodec package (0.11 for torch "
                        "2.11: pip install 'torchcodec==0.11.*') and the system FFmpeg "
                        f"libraries (apt-get install ffmpeg): {str(exc).splitlines()[0]}"
                        ) from exc
    return VideoDecoder


def torchcodec_frames(path: Path, start_s: float | None, end_s: float | None,
                      allow_seek: bool, decoder: str = "torchcodec") -> Iterator:
    """`_Decoded` frames of a video file, as `extract.media_video._file_frames` yields them."""
    from extract.media_video import _EPS, _Decoded

    VideoDecoder = _decoder_class()
    device = decoder.partition(":")[2] or "cpu"
    if not path.exists():
        raise MediaError(path, "open", "no such file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty", "file is empty (0 bytes)")
    try:
        video = VideoDecoder(str(path), seek_mode="exact", device=device, dimension_order="NHWC")
    except (RuntimeError, ValueError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        stage = "no_video" if "video stream" in text.lower() else "open"
        raise MediaError(path, stage, f"torchcodec cannot open it: {text}") from exc
    seeked = allow_seek and bool(start_s)
    count = len(video)
    last_time: float | None = None
    for first in range(0, count, CHUNK):
        try:
            batch = video.get_frames_in_range(first, min(first + CHUNK, count))
        except RuntimeError as exc:
            raise MediaError(path, "decode_video", f"video decoding failed after {first} "
                             f"frames: {str(exc).splitlines()[0]}") from exc
        frames = batch.data.cpu().numpy()
        times = batch.pts_seconds.double().numpy()
        durations = batch.duration_seconds.double().numpy()
        for k in range(len(frames)):
            time_s = float(times[k])
            if last_time is not None and time_s <= last_time + _EPS:
                continue  # repeated or decreasing timestamp: the first one wins, as in PyAV
            last_time = time_s
            image = np.ascontiguousarray(frames[k])
            duration = float(durations[k]) or None
            yield _Decoded(-1 if seeked else first + k, time_s, duration,
                           lambda image=image: image)
            if end_s is not None and time_s >= end_s - _EPS:
                return


__all__ = ["torchcodec_frames"]
