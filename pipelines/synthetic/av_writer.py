"""Write small real media files (video, audio, frame folders) for tests and sample datasets.

Everything goes through PyAV (or PIL for frame folders), so the files are what a real dataset
ships: an H.264/MPEG-4 video stream with its own time base, an AAC/MP3/PCM audio track, and
frames named ``1.png ... N.png``. Containers and codecs are picked from the file suffix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# Audio codec per container suffix; the first one this FFmpeg build has wins.
_AUDIO_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("aac",),
    ".m4a": ("aac",),
    ".mkv": ("aac", "libmp3lame", "flac"),
    ".avi": ("libmp3lame", "pcm_s16le"),
    ".flv": ("aac", "libmp3lame"),
    ".wav": ("pcm_s16le",),
    ".flac": ("flac",),
    ".mp3": ("libmp3lame", "mp3"),
}
_VIDEO_SUFFIXES = (".mp4", ".avi", ".flv", ".mkv")
# Presentation times given explicitly (variable frame rate) are stored on a 90 kHz clock, the
# MPEG convention; fine enough that rounding never reorders or merges frames.
_VFR_TIME_BASE = Fraction(1, 90000)


def _pick_codec(candidates: Sequence[str]) -> str:
    for name in candidates:
        if name in av.codecs_available:
            try:
                av.Codec(name, "w")
            except Exception:  # listed but no encoder in this build
                continue
            return name
    raise RuntimeError(f"none of the codecs {list(candidates)} can encode in this FFmpeg build")


def _as_rate(fps: float | Fraction) -> Fraction:
    """29.97 stays 2997/100, while 30000/1001 given as a float comes back exactly as 30000/1001."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        rate = Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def _audio_2d(audio: np.ndarray) -> np.ndarray:
    """Return audio as float32 [channels, samples] clipped to [-1, 1].

    Accepts mono ``[n]`` or interleaved-by-column ``[n, channels]``.
    """
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    elif a.ndim == 2:
        a = a.T
    else:
        raise ValueError(f"audio must be [n] or [n, channels], got shape {a.shape}")
    return np.ascontiguousarray(np.clip(a, -1.0, 1.0))


def _add_audio_stream(container: av.container.OutputContainer, suffix: str, sample_rate: int,
                      channels: int) -> av.audio.stream.AudioStream:
    if channels > 2:
        raise ValueError(f"at most 2 audio channels are supported, got {channels}")
    codec = _pick_codec(_AUDIO_CODECS.get(suffix, ("aac",)))
    stream = container.add_stream(codec, rate=int(sample_rate))
    stream.layout = "mono" if channels == 1 else "stereo"
    return stream


def _encode_audio(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                  audio: np.ndarray, sample_rate: int) -> None:
    """Encode planar float audio in 1024-sample frames; PyAV re-chunks to the codec frame size."""
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    step = 1024
    for start in range(0, audio.shape[1], step):
        chunk = np.ascontiguousarray(audio[:, start:start + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = int(sample_rate)
        frame.pts = start
        frame.time_base = Fraction(1, int(sample_rate))
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    codec: str = "libx264",
    pts_s: Sequence[float] | None = None,
) -> None:
    """Encode RGB uint8 frames (each HxWx3) into a video file, with an optional audio track.

    ``fps`` is the nominal rate written to the stream. ``pts_s`` gives each frame's presentation
    time in seconds (strictly increasing) to make a variable-frame-rate file; without it frame i
    sits at i / fps. ``audio`` is float32 in [-1, 1], mono ``[n]`` or ``[n, channels]``.
    The container follows the suffix (.mp4, .avi, .flv, .mkv); ``codec`` falls back to mpeg4
    when this FFmpeg build has no such encoder.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _VIDEO_SUFFIXES:
        raise ValueError(f"{path}: video suffix must be one of {_VIDEO_SUFFIXES}")
    rate = _as_rate(fps)
    vcodec = _pick_codec((codec, "mpeg4"))
    audio_2d = _audio_2d(audio) if audio is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)

    frame_iter = iter(frames)
    first = next(frame_iter, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    height, width = np.asarray(first).shape[:2]

    with av.open(str(path), mode="w") as container:
        vstream = container.add_stream(vcodec, rate=rate)
        vstream.width, vstream.height = int(width), int(height)
        # 4:2:0 chroma needs even sizes; odd test sizes keep full chroma where the codec allows.
        odd = width % 2 or height % 2
        vstream.pix_fmt = "yuv444p" if odd and vcodec == "libx264" else "yuv420p"
        if vcodec == "libx264":
            # Fast encode without B-frames, so decode order equals presentation order.
            vstream.options = {"preset": "ultrafast", "bf": "0"}
        time_base = _VFR_TIME_BASE if pts_s is not None else Fraction(1) / rate
        vstream.codec_context.time_base = time_base
        astream = None
        if audio_2d is not None:
            astream = _add_audio_stream(container, suffix, sample_rate, audio_2d.shape[0])

        last_pts = -1
        for i, img in enumerate(_chain(first, frame_iter)):
            arr = np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
            if arr.shape != (height, width, 3):
                raise ValueError(f"{path}: frame {i} has shape {arr.shape}, expected "
                                 f"{(height, width, 3)}")
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            if pts_s is not None:
                if i >= len(pts_s):
                    raise ValueError(f"{path}: more frames than pts_s entries ({len(pts_s)})")
                pts = round(float(pts_s[i]) / time_base)
            else:
                pts = i
            if pts <= last_pts:
                raise ValueError(f"{path}: pts_s must be strictly increasing (frame {i})")
            last_pts = pts
            frame.pts = pts
            frame.time_base = time_base
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None and audio_2d is not None:
            _encode_audio(container, astream, audio_2d, sample_rate)


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    yield first
    yield from rest


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write float audio in [-1, 1] (mono ``[n]`` or ``[n, channels]``) to an audio-only file.

    .wav is 16-bit PCM; .flac, .mp3, .m4a (AAC) and .mp4 (AAC, no video) work where the codec
    exists in this FFmpeg build.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _AUDIO_CODECS:
        raise ValueError(f"{path}: audio suffix must be one of {tuple(_AUDIO_CODECS)}")
    audio_2d = _audio_2d(audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = _add_audio_stream(container, suffix, sample_rate, audio_2d.shape[0])
        _encode_audio(container, stream, audio_2d, sample_rate)


def write_frame_folder(
    dir: str | Path,
    frames: Iterable[np.ndarray] | np.ndarray,
    ext: str = "png",
    start_index: int = 1,
) -> None:
    """Save RGB uint8 frames as ``<start_index>.<ext>``, ``<start_index + 1>.<ext>``, ...

    Names are not zero-padded (``2.png`` then ``10.png``), as several datasets ship them, so
    readers must sort numerically.
    """
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = ext.lower().lstrip(".")
    for i, img in enumerate(frames):
        arr = np.asarray(img, dtype=np.uint8)
        image = Image.fromarray(arr)
        options = {"quality": 95} if ext in ("jpg", "jpeg") else {}
        image.save(out / f"{start_index + i}.{ext}", **options)
