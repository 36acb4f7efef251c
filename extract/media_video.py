"""Stream video frames from a file or a frame folder, resampled by timestamp, cropped, resized.

Resampling rule. With ``fps`` set, the emitted frames sit on the grid ``t0 + k / fps``, where
``t0`` is ``start_s`` if given, otherwise the presentation time of the first decoded frame. Each
grid time shows the latest decoded frame whose presentation time is <= that grid time (the frame
on screen at that moment), so variable frame rate, dropped and duplicated frames all come out
right. Grid times before the first decoded frame show the first frame. The grid stops before the
clip's end: ``end_s`` if given, otherwise the last frame's time plus its duration (as the media
gives it). ``fps=None`` keeps every decoded frame in ``[start_s, end_s)`` at its own time.

Pictures are shown as ffmpeg shows them: the display matrix (a phone's rotation flag) is applied
(`extract.media_orientation`), so a 160x120 stream with rotation 90 comes out 120x160.

Every time comes from the media: frame presentation times are ``pts * time_base`` of the stream;
for a frame folder, the number in an image's name gives its time (``n.png`` at
``(n - 1) / folder_fps``, see `extract.media_base.frame_times`), so holes in the numbering are
gaps in time, filled on the grid by the image before them.

Streaming: frames are decoded lazily, only the frames that are emitted are converted to arrays,
and at most one batch is held, so memory does not grow with clip length.

Truncated or corrupt files: batches decoded before the problem are yielded, then `MediaError`
(stage "decode_video") is raised, saying how many frames were decoded and where the stream
stopped. That covers FFmpeg errors midway and streams that end well before the length the
container declares (more than max(0.5 s, 2 %, 3 frames) short). A caller treats the clip as
failed, so a half-read clip never passes for a whole one.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from extract.media_base import (
    AV_ERRORS,
    DEFAULT_FOLDER_FPS,
    MAX_FPS,
    MAX_FRAME_GAP_S,
    MIN_FPS,
    MediaError,
    _ffmpeg_reason,
    decode_from,
    frame_times,
    list_frame_folder,
    open_container,
    stream_end_s,
    video_stream,
)
from extract.media_orientation import UnsupportedRotation, orientation_of
from features_store.errors import UserError

RESIZE_MODES = ("square", "shorter")
DECODERS = ("pyav", "torchcodec", "torchcodec:cuda")
# Timestamps are rationals turned into floats; a microsecond covers the rounding.
_EPS = 1e-6
# A timestamp this far before the previous one is a restart, not a reordered frame.
TIMESTAMP_RESTART_S = 0.5

Box = Sequence[float]
BoxSpec = Box | Mapping[int | str, Box] | np.ndarray | None


@dataclass
class FrameBatch:
    """Consecutive emitted frames of one clip.

    ``frames`` uint8 [n, H, W, 3] RGB; ``times_s`` float64 [n], the time each frame stands for
    (the grid time when resampling, else the frame's presentation time); ``source_times_s`` the
    presentation time of the decoded frame shown; ``source_index`` its 0-based index in the file
    (decode order) or the folder (numeric order), -1 where a seek to ``start_s`` made the index
    unknowable (video file, start_s > 0, no per-frame boxes).
    """

    frames: np.ndarray
    times_s: np.ndarray
    source_times_s: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class _Decoded:
    """One decoded frame, converted to an array only if it gets emitted."""

    index: int
    time_s: float
    duration_s: float | None
    load: Callable[[], np.ndarray]


class _BoxLookup:
    """Crop box per source frame: one box for the clip, or boxes keyed by frame.

    Frames without a box of their own use the nearest earlier box; frames before the first box
    keep the full image.
    """

    def __init__(self, boxes: BoxSpec, names: Sequence[str] | None, source: Path) -> None:
        self.single: tuple[float, float, float, float] | None = None
        self.keys: list[int] = []
        self.values: list[tuple[float, float, float, float]] = []
        if boxes is None:
            return
        if isinstance(boxes, Mapping):
            position = {name: i for i, name in enumerate(names or [])}
            position.update({Path(name).stem: i for i, name in enumerate(names or [])})
            by_index: dict[int, tuple[float, float, float, float]] = {}
            for key, box in boxes.items():
                if isinstance(key, str):
                    if key not in position:
                        raise UserError(f"{source}: crop box given for {key!r}, which is not a "
                                        "frame of this source")
                    index = position[key]
                else:
                    index = int(key)
                by_index[index] = _check_box(box, source, key)
            self.keys = sorted(by_index)
            self.values = [by_index[k] for k in self.keys]
            return
        array = np.asarray(boxes, dtype=np.float64)
        if array.shape == (4,):
            self.single = _check_box(array, source, "clip")
        elif array.ndim == 2 and array.shape[1] == 4:
            self.keys = list(range(len(array)))
            self.values = [_check_box(b, source, i) for i, b in enumerate(array)]
        else:
            raise UserError(f"{source}: boxes must be one [l, t, r, b] box, an [n, 4] array or a "
                            f"mapping frame -> box, got shape {array.shape}")

    @property
    def per_frame(self) -> bool:
        return bool(self.keys)

    def __call__(self, index: int) -> tuple[float, float, float, float] | None:
        if self.single is not None:
            return self.single
        at = bisect.bisect_right(self.keys, index) - 1
        return self.values[at] if at >= 0 else None


def _check_box(box: Box, source: Path, key: object) -> tuple[float, float, float, float]:
    values = tuple(float(v) for v in box)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise UserError(f"{source}: crop box for {key} must be 4 finite numbers [l, t, r, b], "
                        f"got {list(box)}")
    left, top, right, bottom = values
    if right <= left or bottom <= top:
        raise UserError(f"{source}: crop box for {key} is empty: {list(values)} "
                        "(need l < r and t < b)")
    return left, top, right, bottom


def crop(image: np.ndarray, box: Box, margin: float = 0) -> np.ndarray:
    """Cut ``[l, t, r, b]`` grown by ``margin`` pixels on each side, clamped to the image."""
    height, width = image.shape[:2]
    left = max(0, math.floor(box[0] - margin))
    top = max(0, math.floor(box[1] - margin))
    right = min(width, math.ceil(box[2] + margin))
    bottom = min(height, math.ceil(box[3] + margin))
    if right <= left or bottom <= top:
        raise ValueError(f"crop box {list(box)} lies outside the {width}x{height} image")
    return image[top:bottom, left:right]


def target_size(height: int, width: int, size: int | tuple[int, int] | None,
                mode: str = "square") -> tuple[int, int]:
    """(height, width) after resizing: ``size`` square, shorter side = ``size``, or (h, w)."""
    if size is None:
        return height, width
    if isinstance(size, Sequence):
        out_h, out_w = (int(v) for v in size)
        return out_h, out_w
    if mode == "square":
        return int(size), int(size)
    if mode == "shorter":
        scale = int(size) / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {mode!r}")


def resize(image: np.ndarray, size: int | tuple[int, int] | None,
           mode: str = "square") -> np.ndarray:
    """Plain bilinear resize of a uint8 HxWx3 image (PIL antialiases when shrinking)."""
    out_h, out_w = target_size(image.shape[0], image.shape[1], size, mode)
    if (out_h, out_w) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.Resampling.BILINEAR))


def _folder_frames(folder: Path, files: list[Path], folder_fps: float, start_s: float | None,
                   end_s: float | None) -> Iterator[_Decoded]:
    def loader(path: Path) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            try:
                with Image.open(path) as image:
                    return np.asarray(image.convert("RGB"))
            except OSError as exc:
                raise MediaError(path, "decode_video", f"cannot read frame image: {exc}") from exc
        return load

    times = frame_times(files, folder_fps)
    first = 0
    if start_s is not None:
        # Start from the image on screen at start_s, as for a video file.
        first = max(0, bisect.bisect_right(times, start_s + _EPS) - 1)
    for index in range(first, len(files)):
        time_s = times[index]
        yield _Decoded(index, time_s, 1.0 / folder_fps, loader(files[index]))
        if end_s is not None and time_s >= end_s - _EPS:
            return  # the first frame past the range only marks where the range ends


def _file_frames(path: Path, start_s: float | None, end_s: float | None,
                 allow_seek: bool, codec_threads: int | None = None) -> Iterator[_Decoded]:
    with open_container(path) as container:
        stream = video_stream(container)
        if stream is None:
            raise MediaError(path, "no_video", "has no video stream")
        stream.thread_type = "AUTO"
        if codec_threads is not None:
            # Decode workers ask for one thread each: FFmpeg's default (one per core) in every
            # worker would oversubscribe the cores the workers already share out.
            stream.codec_context.thread_count = codec_threads
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        expected_end = stream_end_s(stream, container)

        seek_to = start_s if allow_seek else None
        index = -1
        last: _Decoded | None = None
        dropped = 0
        try:
            for frame in decode_from(container, stream, seek_to, "decode_video"):
                index += 1
                if frame.pts is not None:
                    time_s = float(frame.pts * frame.time_base)
                elif last is not None and rate:
                    time_s = last.time_s + 1.0 / rate  # no timestamp: next slot at the stream rate
                else:
                    time_s = 0.0
                if last is not None and time_s < last.time_s - TIMESTAMP_RESTART_S:
                    # Not a reordered frame: the timestamps start again (concatenated MPEG-TS).
                    # Dropping everything after would keep only the first piece of the clip.
                    raise MediaError(path, "decode_video",
                                     f"timestamps restart at frame {index} (from "
                                     f"{last.time_s:.3f} s back to {time_s:.3f} s); re-encode "
                                     "it with continuous timestamps, e.g. ffmpeg -i IN -vf "
                                     "setpts=N/FRAME_RATE/TB OUT.mp4")
                if last is not None and time_s <= last.time_s + _EPS:
                    dropped += 1  # duplicate or out-of-order timestamp: the first one wins
                    continue
                duration = (float(frame.duration * frame.time_base)
                            if frame.duration and frame.time_base else None)
                try:
                    # Shown as ffmpeg shows it: a phone's rotation flag turns the picture.
                    orientation = orientation_of(frame)
                except UnsupportedRotation as exc:
                    raise MediaError(path, "decode_video", str(exc)) from None
                last = _Decoded(-1 if seek_to else index, time_s, duration,
                                lambda frame=frame, orientation=orientation:
                                orientation.apply(frame.to_ndarray(format="rgb24")))
                yield last
                if end_s is not None and time_s >= end_s - _EPS:
                    return  # the first frame past the range only marks where the range ends
        except AV_ERRORS as exc:
            where = f"after {index + 1} frames"
            if last is not None:
                where += f" (last at {last.time_s:.3f} s)"
            raise MediaError(path, "decode_video",
                             f"video decoding failed {where}: {_ffmpeg_reason(exc)}") from exc
        if dropped:
            warnings.warn(f"{path}: dropped {dropped} frames with repeated or decreasing "
                          "timestamps", stacklevel=3)
        if last is None or expected_end is None:
            return
        wanted_end = expected_end if end_s is None else min(end_s, expected_end)
        decoded_end = last.time_s + (last.duration_s or (1.0 / rate if rate else 0.0))
        span = expected_end - (start_s or 0.0)
        tolerance = max(0.5, 0.02 * span, 3.0 / rate if rate else 0.0)
        if decoded_end < wanted_end - tolerance:
            count = f"{index + 1} frames" + (" after seeking" if seek_to else "")
            raise MediaError(path, "decode_video",
                             f"video stream stops at {decoded_end:.3f} s but the container "
                             f"declares {expected_end:.3f} s ({count} decoded); the file looks "
                             "truncated")


def _grid(decoded: Iterator[_Decoded], fps: float | None, start_s: float | None,
          end_s: float | None, source: Path | str = "") -> Iterator[tuple[float, _Decoded]]:
    """Apply the resampling rule of the module docstring: (time it stands for, frame shown).

    The decoders also hand over the first frame at or after ``end_s``: it is never emitted, it
    only tells that the frame before it stays on screen until ``end_s``.
    """
    stop = math.inf if end_s is None else end_s
    if fps is None:
        for item in decoded:
            if item.time_s >= stop - _EPS:
                return
            if start_s is None or item.time_s >= start_s - _EPS:
                yield item.time_s, item
        return
    period = 1.0 / fps
    t0 = start_s
    k = 0
    latest: _Decoded | None = None
    previous_gap: float | None = None
    clip_end: float | None = None
    for item in decoded:
        if t0 is None:
            t0 = item.time_s
        if latest is None and item.time_s >= stop - _EPS:
            return  # the source starts after the range ends: no frame of it is in the range
        gap = item.time_s - (latest.time_s if latest is not None else t0)
        if gap > MAX_FRAME_GAP_S:
            where = f"{latest.time_s:.3f} s" if latest is not None else f"the start {t0:.3f} s"
            raise MediaError(source, "decode_video",
                             f"no frame for {gap:.0f} s (from {where} to {item.time_s:.3f} s); "
                             f"gaps over {MAX_FRAME_GAP_S:g} s are damaged timing, not video")
        # Grid times strictly before this frame belong to the frame before it.
        while (t := t0 + k * period) < min(item.time_s, stop) - _EPS:
            yield t, latest if latest is not None else item
            k += 1
        if item.time_s >= stop - _EPS:
            clip_end = stop
            break
        if latest is not None:
            previous_gap = item.time_s - latest.time_s
        latest = item
    if latest is None or t0 is None:
        return
    if clip_end is None:
        # End of stream: the last frame stays on screen for its duration (from the media,
        # else the gap before it).
        clip_end = min(stop, latest.time_s + (latest.duration_s or previous_gap or period))
    while (t := t0 + k * period) < clip_end - _EPS:
        yield t, latest
        k += 1


def iter_video_frames(
    source: str | Path,
    fps: float | None = None,
    size: int | tuple[int, int] | None = None,
    resize_mode: str = "square",
    boxes: BoxSpec = None,
    box_margin: float = 0,
    batch_size: int = 32,
    start_s: float | None = None,
    end_s: float | None = None,
    folder_fps: float = DEFAULT_FOLDER_FPS,
    codec_threads: int | None = None,
    decoder: str = "pyav",
) -> Iterator[FrameBatch]:
    """Decode a video file or a frame folder lazily into batches of RGB uint8 frames.

    ``fps`` resamples by timestamp (see the module docstring for the rule); None keeps every
    frame. ``size``: an int resizes to ``size`` x ``size`` (``resize_mode="square"``) or the
    shorter side to ``size`` (``"shorter"``); a tuple is an exact (height, width). ``boxes``
    crops before resizing: one [l, t, r, b] box for the clip, an [n, 4] array, or a mapping
    from the 0-based source frame index (or, for folders, the file name or stem) to a box;
    ``box_margin`` pixels are added on each side and the result is clamped to the image.
    ``start_s``/``end_s`` restrict the clip to a time range of the source.
    ``codec_threads`` caps FFmpeg's decoding threads (None: FFmpeg's choice). ``decoder`` is
    "pyav" or "torchcodec" (`extract.media_torchcodec`: same timestamps and frames, optionally
    on a CUDA device as "torchcodec:cuda"); frame folders are always read with PIL.
    Raises MediaError (see `extract.media_base.MediaError` for the stages).
    """
    source = Path(source)
    if fps is not None and not MIN_FPS <= fps <= MAX_FPS:
        raise ValueError(f"fps must be in {MIN_FPS:g}..{MAX_FPS:g}, got {fps}")
    if not MIN_FPS <= folder_fps <= MAX_FPS:
        raise ValueError(f"a frame folder's fps must be in {MIN_FPS:g}..{MAX_FPS:g}, "
                         f"got {folder_fps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")

    if source.is_dir():
        files = list_frame_folder(source)
        lookup = _BoxLookup(boxes, [f.name for f in files], source)
        decoded = _folder_frames(source, files, folder_fps, start_s, end_s)
    else:
        lookup = _BoxLookup(boxes, None, source)
        # Per-frame boxes are keyed by absolute frame index, which only a decode from the
        # start can count; otherwise seek straight to start_s.
        if decoder == "pyav":
            decoded = _file_frames(source, start_s, end_s, not lookup.per_frame, codec_threads)
        else:
            from extract.media_torchcodec import torchcodec_frames

            decoded = torchcodec_frames(source, start_s, end_s, not lookup.per_frame, decoder)

    yield from _batches(source, _grid(decoded, fps, start_s, end_s, source), lookup, box_margin,
                        size,
                        resize_mode, batch_size, (start_s, end_s))


def _batches(source: Path, chosen: Iterator[tuple[float, _Decoded]], lookup: _BoxLookup,
             margin: float, size: int | tuple[int, int] | None, mode: str, batch_size: int,
             time_range: tuple[float | None, float | None]) -> Iterator[FrameBatch]:
    frames: list[np.ndarray] = []
    times: list[float] = []
    source_times: list[float] = []
    indices: list[int] = []
    cached: tuple[_Decoded, np.ndarray] | None = None  # upsampling shows a frame several times
    emitted = 0

    def flush() -> FrameBatch:
        shapes = {f.shape for f in frames}
        if len(shapes) > 1:
            raise UserError(f"{source}: frames come out in different sizes {sorted(shapes)}; "
                            "pass size= to resize them to one")
        batch = FrameBatch(np.stack(frames), np.asarray(times, dtype=np.float64),
                           np.asarray(source_times, dtype=np.float64),
                           np.asarray(indices, dtype=np.int64))
        frames.clear(), times.clear(), source_times.clear(), indices.clear()
        return batch

    for time_s, item in chosen:
        if cached is None or cached[0] is not item:
            image = item.load()
            box = lookup(item.index)
            if box is not None:
                try:
                    image = crop(image, box, margin)
                except ValueError as exc:
                    raise UserError(f"{source}: frame {item.index}: {exc}") from exc
            image = np.ascontiguousarray(resize(image, size, mode))
            cached = (item, image)
        frames.append(cached[1])
        times.append(time_s)
        source_times.append(item.time_s)
        indices.append(item.index)
        emitted += 1
        if len(frames) == batch_size:
            yield flush()
    if frames:
        yield flush()
    if emitted == 0:
        start_s, end_s = time_range
        where = "" if start_s is None and end_s is None else \
            f" in [{start_s or 0:.3f}, {'end' if end_s is None else f'{end_s:.3f}'}) s"
        raise MediaError(source, "empty", f"no video frames decoded{where}")


def count_frames(source: str | Path, folder_fps: float = DEFAULT_FOLDER_FPS) -> int:
    """Decode every frame and count them (what the container declares can be wrong or missing)."""
    return sum(len(b) for b in iter_video_frames(source, fps=None, batch_size=256,
                                                 folder_fps=folder_fps))


__all__ = ["FrameBatch", "iter_video_frames", "crop", "resize", "target_size", "count_frames",
           "RESIZE_MODES"]
