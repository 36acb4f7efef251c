"""What every media reader shares: the error type, probing, opening files, frame folders.

A source is a media file (anything FFmpeg opens: .mp4, .avi, .flv, .mkv, .wav, .mp3, .flac, ...)
or a folder of frames (``1.png ... N.png`` or JPG, sorted numerically). Problems a user can cause
(missing file, empty file, no audio track, corrupt data) raise `MediaError`, whose ``stage`` says
where it failed so the extraction runner can file it in the failure ledger.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

from features_store.errors import UserError

STAGES = ("open", "decode_video", "decode_audio", "no_video", "no_audio", "empty")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_FOLDER_FPS = 25.0
# Frame rates outside this range are not video: resampling at 1e6 fps, or timing a frame folder
# at 1e-300 fps, would emit frames without end.
MIN_FPS = 0.01
MAX_FPS = 1000.0
# The longest time one decoded frame may stay on screen while resampling: a longer jump between
# consecutive timestamps (images 1 and 99999999 of a folder, an hour-long timestamp jump) is
# damaged timing, and filling it would emit millions of copies of one frame.
MAX_FRAME_GAP_S = 600.0
# What PyAV raises for bad input; OSError/ValueError cover paths and malformed arguments.
AV_ERRORS = (av.FFmpegError, OSError, ValueError)


class MediaError(UserError):
    """A media source that cannot be read, reported as one line: file, reason, stage.

    ``stage`` is one of `STAGES`: "open" (missing or unreadable file), "empty" (zero-length file,
    or nothing decoded), "no_video" / "no_audio" (the stream asked for is absent),
    "decode_video" / "decode_audio" (corrupt or truncated data met while decoding).
    """

    def __init__(self, path: str | Path, stage: str, reason: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown media error stage {stage!r}; expected one of {STAGES}")
        self.path = str(path)
        self.stage = stage
        self.reason = " ".join(str(reason).split())  # one line, whatever FFmpeg said
        super().__init__(f"{self.path}: {self.reason} (stage: {stage})")

    def __reduce__(self) -> tuple:
        # Rebuild from the three fields: failures cross process boundaries (dask workers).
        return type(self), (self.path, self.stage, self.reason)


@dataclass(frozen=True)
class MediaInfo:
    """What the container (or the frame folder) says about a source, before decoding it.

    ``n_frames`` is the frame count the container declares, None where it declares none
    (Matroska, FLV); ``fps`` is the stream's average rate. ``width``/``height`` are the size as
    shown, after the display matrix (a portrait phone video with rotation 90 is 120 x 160 here,
    as in ffprobe's rotated view), which is the size decoded frames come out in. Start times
    are the first presentation times of the streams, in seconds.
    """

    path: str
    is_frame_folder: bool
    has_video: bool
    has_audio: bool
    duration_s: float | None
    fps: float | None
    n_frames: int | None
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None
    video_codec: str | None = None
    audio_codec: str | None = None
    video_start_s: float | None = None
    audio_start_s: float | None = None


def _natural_key(name: str) -> tuple:
    """Sort key that puts ``2.png`` before ``10.png`` and ``img_9`` before ``img_10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", name) if part)


def is_frame_folder(source: str | Path) -> bool:
    return Path(source).is_dir()


def list_frame_folder(folder: str | Path) -> list[Path]:
    """The frame images of a folder in numeric order; MediaError if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(folder, "open", "no such frame folder")
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    if not files:
        raise MediaError(folder, "empty",
                         f"frame folder has no {'/'.join(FRAME_SUFFIXES)} images")
    return sorted(files, key=lambda p: _natural_key(p.name))


def frame_times(files: list[Path], folder_fps: float) -> list[float]:
    """When each image of a frame folder (in `list_frame_folder` order) is shown, in seconds.

    The number in an image's name is its frame number in the video it came from, so image
    ``n`` is at ``(n - first) / folder_fps``, where ``first`` is 0 if the folder has an image
    numbered 0 and 1 otherwise (``1.png`` / ``00001.jpg``, as ffmpeg's image writer and the
    datasets number them). Holes in the numbering (frames where no face was found) therefore
    leave a gap in time instead of shifting every later image earlier. Only where the names
    carry no usable number (a name without digits, or two images with one number) is image
    ``i`` of the sorted list at ``i / folder_fps``.
    """
    numbers = []
    for path in files:
        digits = re.findall(r"\d+", path.stem)
        if not digits:
            return [i / folder_fps for i in range(len(files))]
        numbers.append(int(digits[-1]))
    if len(set(numbers)) != len(numbers):
        return [i / folder_fps for i in range(len(files))]
    first = 0 if min(numbers) == 0 else 1
    return [(n - first) / folder_fps for n in numbers]


def open_container(path: str | Path) -> av.container.InputContainer:
    """Open a media file for reading, turning every way it can fail into a MediaError."""
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "open", "no such file")
    if not path.is_file():
        raise MediaError(path, "open", "not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty", "file is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except AV_ERRORS as exc:
        raise MediaError(path, "open", f"cannot open as media: {_ffmpeg_reason(exc)}") from exc


def _ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's own words without the errno prefix and the repeated file name."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first real video stream; cover art in audio files (attached pictures) does not count."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    return container.streams.audio[0] if container.streams.audio else None


def decode_from(container: av.container.InputContainer, stream: av.stream.Stream,
                start_s: float | None, stage: str,
                preroll_s: float = 0.0) -> Iterator[av.frame.Frame]:
    """Decoded frames of ``stream``, the first one at or before ``start_s`` when that exists.

    Seeking is cheap but not exact: some demuxers (Matroska audio) land just after the time asked
    for. So the first frame is checked, and the seek goes further back, up to the very start.
    ``preroll_s`` seeks that much earlier to begin with: lossy audio decoders (AAC overlap,
    MP3 bit reservoir) need a few frames before their output is right.
    """
    if start_s is None or start_s <= 0:
        yield from container.decode(stream)
        return
    for back_s in (preroll_s, preroll_s + 1.0, preroll_s + 10.0, None):
        if back_s is None:
            offset = stream.start_time or 0
        else:
            offset = int(max(0.0, start_s - back_s) / stream.time_base)
        try:
            container.seek(offset, stream=stream, backward=True)
        except AV_ERRORS as exc:
            raise MediaError(container.name, stage,
                             f"cannot seek to {start_s:.3f} s: {_ffmpeg_reason(exc)}") from exc
        frames = container.decode(stream)
        first = next(frames, None)
        if first is None and back_s is not None:
            continue
        if first is None:
            return
        if back_s is None or first.time is None or first.time <= start_s + 1e-6:
            yield first
            yield from frames
            return


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _metadata_duration(stream: av.stream.Stream) -> float | None:
    """Matroska writes each track's length as a ``DURATION`` tag (``HH:MM:SS.fffffffff``)."""
    text = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if not text:
        return None
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", text.strip())
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def stream_start_s(stream: av.stream.Stream) -> float:
    start = _seconds(stream.start_time, stream.time_base)
    return start if start is not None else 0.0


def stream_end_s(stream: av.stream.Stream, container: av.container.InputContainer) -> float | None:
    """Where the container says this stream ends, from the most specific field it fills in."""
    start = stream_start_s(stream)
    duration = _seconds(stream.duration, stream.time_base) if stream.duration else None
    if duration is None:
        duration = _metadata_duration(stream)
    if duration is None and stream.type == "video" and stream.frames and stream.average_rate:
        duration = stream.frames / float(stream.average_rate)
    if duration is not None:
        return start + duration
    if container.duration:
        container_start = (container.start_time or 0) / av.time_base
        return container_start + container.duration / av.time_base
    return None


def _displayed_size(container: av.container.InputContainer,
                    video: av.video.stream.VideoStream) -> tuple[int, int]:
    """(width, height) as shown; the display matrix rides on decoded frames, so decode one."""
    from extract.media_orientation import orientation_of

    width, height = video.codec_context.width, video.codec_context.height
    try:
        frame = next(container.decode(video), None)
        if frame is not None:
            return orientation_of(frame).displayed_size(frame.width, frame.height)
    except AV_ERRORS:
        pass  # a corrupt first frame: the decoder will say so; probing reports the declared size
    return width, height


def probe(source: str | Path, folder_fps: float = DEFAULT_FOLDER_FPS) -> MediaInfo:
    """Read what the container declares (streams, rate, frame count, duration) without decoding.

    For a frame folder: ``n_frames`` is the number of images, ``fps`` is ``folder_fps``, times
    follow the numbers in the names (`frame_times`) and the size is that of the first image.
    """
    source = Path(source)
    if source.is_dir():
        files = list_frame_folder(source)
        try:
            with Image.open(files[0]) as image:
                width, height = image.size
        except OSError as exc:
            raise MediaError(files[0], "open", f"cannot read image: {exc}") from exc
        times = frame_times(files, folder_fps)
        return MediaInfo(path=str(source), is_frame_folder=True, has_video=True, has_audio=False,
                         duration_s=times[-1] + 1.0 / folder_fps, fps=float(folder_fps),
                         n_frames=len(files), width=width, height=height, sample_rate=None,
                         channels=None, video_codec=files[0].suffix.lower().lstrip("."),
                         video_start_s=times[0])
    with open_container(source) as container:
        video = video_stream(container)
        audio = audio_stream(container)
        width = height = None
        if video is not None:
            width, height = _displayed_size(container, video)
        if container.duration:
            duration = container.duration / av.time_base
        else:
            ends = [stream_end_s(s, container) for s in (video, audio) if s is not None]
            known = [e for e in ends if e is not None]
            duration = max(known) if known else None
        return MediaInfo(
            path=str(source),
            is_frame_folder=False,
            has_video=video is not None,
            has_audio=audio is not None,
            duration_s=duration,
            fps=float(video.average_rate) if video is not None and video.average_rate else None,
            n_frames=(video.frames or None) if video is not None else None,
            width=width,
            height=height,
            sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            channels=audio.codec_context.channels if audio is not None else None,
            video_codec=video.codec_context.name if video is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            video_start_s=stream_start_s(video) if video is not None else None,
            audio_start_s=stream_start_s(audio) if audio is not None else None,
        )
