"""Reading the small facts adapters need from files: frame counts, rates, text lines, listings.

Media are never decoded: frame counts come from the container header, or (AVI, FLV, whose
headers are unreliable or silent) from counting demuxed packets. Every failure is a `SkipClip`
whose message names the file, for the ledger.
"""

from __future__ import annotations

import os
import re
import stat
import wave
from dataclasses import dataclass
from pathlib import Path

from features_store.errors import UserError

from .base import Collector, SkipClip, display_path, is_utf8_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".flv", ".mkv", ".mov", ".webm")
# Containers whose header frame count is exact (an MP4 sample table lists every frame).
_EXACT_HEADER_SUFFIXES = (".mp4", ".mov", ".m4v")


@dataclass
class VideoProbe:
    fps: float
    n_frames: int
    duration: float
    has_audio: bool


def probe_video(path: Path) -> VideoProbe:
    """Frame rate and frame count from the container header (the real rate, not a guess)."""
    import av

    if not is_plain_file(path):  # FFmpeg would block forever on a FIFO
        raise SkipClip(f"{display_path(path)}: not a regular file (a FIFO, device or socket)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SkipClip(f"{display_path(path)}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            duration = 0.0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            n_frames = int(stream.frames or 0)
            has_audio = bool(container.streams.audio)
            if n_frames <= 0 or path.suffix.lower() not in _EXACT_HEADER_SUFFIXES:
                # AVI indexes carry padding entries and FLV has no count: count the packets
                # (demuxing only, no decoding).
                n_frames = sum(1 for packet in container.demux(stream) if packet.size)
    except SkipClip:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise SkipClip(f"{display_path(path)}: cannot read video ({exc})") from None
    if fps <= 0 or n_frames <= 0:
        raise SkipClip(f"{display_path(path)}: video has no frames")
    return VideoProbe(fps=fps, n_frames=n_frames, duration=duration or n_frames / fps,
                      has_audio=has_audio)


def _numeric_key(name: str) -> tuple[int, int | str]:
    stem = Path(name).stem
    digits = re.findall(r"\d+", stem)
    return (0, int(digits[-1])) if digits else (1, stem)


def frame_images(folder: Path) -> list[str]:
    """Image file names of a frame folder in frame order (numeric: 2.png before 10.png)."""
    try:
        names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES)]
    except OSError:
        return []
    return sorted(names, key=_numeric_key)


def wav_duration(path: Path) -> float | None:
    """Duration of a PCM wav from its header; None for anything `wave` cannot read."""
    if not is_plain_file(path):  # a FIFO would block the read forever
        return None
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, OSError):
        return None


class NotAPlainFile(SkipClip, UserError):
    """A dataset file that is a FIFO, device or socket: reading it would block the scan forever.
    Skips the clip where a clip's file is read; elsewhere it is the scan's one-line error."""


def is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_plain_file(path: Path) -> bytes:
    """The bytes of a regular file, checked before reading (O_NONBLOCK: a FIFO swapped in
    after the check still cannot block)."""
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(handle, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotAPlainFile(f"{display_path(path)}: not a regular file (a FIFO, device or "
                                "socket); replace it with the dataset's file")
        return f.read()


def read_lines(path: Path) -> list[str]:
    """Lines of a text file; UTF-8 (with or without BOM), falling back to Latin-1.

    Several datasets ship Windows-1252 text (MELD's apostrophes); Latin-1 never fails, so a file
    is always readable and the odd character is at worst shown wrongly.
    """
    data = read_plain_file(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    return text.splitlines()


def list_dir(folder: Path, collector: Collector | None = None) -> list[str]:
    """Names in a folder, sorted; names that are not UTF-8 are reported and left out."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    good = []
    for name in names:
        if is_utf8_name(name):
            good.append(name)
        elif collector is not None:
            shown = display_path(folder / name)
            collector.problem(f"{shown}: file name is not valid UTF-8; rename it", file=shown)
    return good


def find_files(root: Path, suffixes: tuple[str, ...], collector: Collector | None = None,
               skip_dirs: tuple[str, ...] = ()) -> dict[str, Path]:
    """Every file under `root` with one of `suffixes`, by file stem (first in sorted order wins).

    Non-UTF-8 names are reported once and left out.
    """
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("._") or not name.lower().endswith(suffixes):
                continue
            if not is_utf8_name(name) or not is_utf8_name(dirpath):
                if collector is not None:
                    shown = display_path(Path(dirpath) / name)
                    collector.problem(f"{shown}: file name is not valid UTF-8; rename it",
                                      file=shown)
                continue
            found.setdefault(Path(name).stem, Path(dirpath) / name)
    return found
