"""Live media in: a file, a network stream or a camera, read by PyAV on a thread of its own.

Video frames are put on the run's frame grid by the very rule extraction uses
(`extract.media_video._grid`: each grid time shows the latest frame shown at or before it), and
resized as extraction resizes them, so a file read as fast as possible gives the frames
`affect predict --media` encodes. Audio is decoded alongside, mixed to mono and resampled to
each rate an audio encoder asks for, into `AudioBuffer`s on the video's media clock.

Frames wait in a `FrameQueue` for the model. Read as fast as possible (a file without
`--realtime`) the reader waits for the model; read live (a network stream, a camera, a paced
file) the queue keeps the newest frames and drops the oldest, counting them.

A separate microphone (`--audio-source alsa:DEVICE`) is read on a thread of its own, its packets
joined into short chunks before decoding (a device may hand over one sample per read), placed on
the video clock by the wall clock, and held at most `MIC_AHEAD_S` ahead of that clock.

The reader ends at the end of the media, when a network source has been silent for the idle
timeout, or when asked to stop (Ctrl-C).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from extract.media_orientation import orientation_of
from extract.media_video import _Decoded, _grid, resize
from features_store.errors import UserError

NETWORK_SCHEMES = ("udp://", "rtp://", "rtsp://", "http://", "https://", "srt://", "tcp://")
# `FORMAT:DEVICE` sources PyAV opens through an FFmpeg input device (a microphone, a camera).
DEVICE_FORMATS = ("v4l2", "alsa", "pulse", "avfoundation", "dshow")
# Where Linux distributions keep ALSA's configuration and its plugins (pulse, pipewire, jack).
SYSTEM_ALSA_DIR = "/usr/share/alsa"
SYSTEM_ALSA_PLUGIN_DIRS = ([f"/usr/lib/{sysconfig.get_config_var('MULTIARCH')}/alsa-lib"]
                           if sysconfig.get_config_var("MULTIARCH") else []) + \
    ["/usr/lib64/alsa-lib", "/usr/lib/alsa-lib"]
MIC_CHUNK_S = 0.01  # a microphone's samples are decoded and buffered this many seconds at once
MIC_AHEAD_S = 0.25  # how far a microphone may run ahead of the video clock before it is held


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """Where media comes from and how to open it."""

    url: str
    format: str | None = None   # an FFmpeg input device ("v4l2", "alsa", ...) or None
    live: bool = False          # arrives at its own pace (network, device): drop when behind

    @property
    def is_file(self) -> bool:
        return not self.live


def parse_source(text: str) -> SourceSpec:
    """`--source` / `--audio-source` as a `SourceSpec` (a file, a URL, a device)."""
    if text == "camera":  # the platform's default camera
        if sys.platform == "darwin":
            return SourceSpec("0", "avfoundation", live=True)
        return SourceSpec("/dev/video0", "v4l2", live=True)
    if text.startswith(NETWORK_SCHEMES):
        return SourceSpec(text, None, live=True)
    if text.startswith("/dev/video"):
        return SourceSpec(text, "v4l2", live=True)
    head, sep, device = text.partition(":")
    if sep and head in DEVICE_FORMATS:
        return SourceSpec(device, head, live=True)
    if not Path(text).is_file():
        raise UserError(f"{text}: no such file (a source is a media file, a URL "
                        f"({', '.join(s[:-3] for s in NETWORK_SCHEMES)}), /dev/videoN, "
                        f"camera, or FORMAT:DEVICE with FORMAT one of {', '.join(DEVICE_FORMATS)})")
    return SourceSpec(text, None, live=False)


def open_source(spec: SourceSpec, idle_timeout_s: float,
                sample_rate: int | None = None) -> av.container.InputContainer:
    """Open a source; a network source waits `idle_timeout_s` for data at most (then one line).
    `sample_rate`: the rate to ask a microphone for (the device, or ALSA's plug layer, converts)."""
    options = {}
    if spec.live:
        # FFmpeg probes 5 s of a stream by default before it opens; live needs far less
        options.update(analyzeduration="1000000", probesize="1000000")
    if spec.url.startswith("udp://"):
        options["overrun_nonfatal"] = "1"  # a late reader loses packets, not the stream
        options["fifo_size"] = "1000000"
    if spec.format in ("alsa", "pulse") and sample_rate:
        options["sample_rate"] = str(sample_rate)
    name = f"{spec.format}:{spec.url}" if spec.format in DEVICE_FORMATS[1:] else spec.url
    # FFmpeg names a format by all its names at once: "video4linux2,v4l2"
    if spec.format and spec.format not in {n for names in av.formats_available
                                           for n in names.split(",")}:
        # PyAV's wheels have no `pulse` input, nor another platform's devices
        hint = ("; PulseAudio and PipeWire microphones open through ALSA: alsa:default or "
                "alsa:pulse" if spec.format == "pulse" else "")
        raise UserError(f"{name}: this FFmpeg has no {spec.format} input{hint}")
    if spec.format == "alsa":
        use_system_alsa()
    library_said: list[str] = []
    try:
        with _c_stderr_kept(library_said) if spec.format in DEVICE_FORMATS else \
                contextlib.nullcontext():
            return av.open(spec.url, mode="r", format=spec.format, options=options,
                           timeout=(idle_timeout_s, idle_timeout_s) if spec.live else None,
                           metadata_errors="ignore")
    except (av.FFmpegError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        said = _library_reason(library_said[0] if library_said else "")
        raise UserError(f"{name}: cannot open ({reason}{'; ' + said if said else ''})") \
            from None


def use_system_alsa() -> None:
    """Point the libasound inside PyAV's wheels at the system's ALSA configuration and plugins;
    a user's own ALSA_CONFIG_DIR / ALSA_PLUGIN_DIR win. That libasound was built to look under
    /tmp/vendor (the wheel builder's prefix): from there no device name means anything, and it
    would read configuration and load plugin code from where anyone may write. libasound reads
    both once per process, at its first use: this must come before."""
    os.environ.setdefault("ALSA_CONFIG_DIR", SYSTEM_ALSA_DIR)
    os.environ.setdefault("ALSA_PLUGIN_DIR", next(
        (d for d in SYSTEM_ALSA_PLUGIN_DIRS if os.path.isdir(d)), SYSTEM_ALSA_PLUGIN_DIRS[-1]))


@contextlib.contextmanager
def _c_stderr_kept(said: list[str]) -> Iterator[None]:
    """Keep what C libraries write to stderr meanwhile: ALSA prints its reasons for a failed
    open there, one `ALSA lib FILE:LINE:(FUNCTION) REASON` line each, which would break the one
    line a user error is. Kept, it goes into that line; after a good open it goes out as it came."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as kept:
            os.dup2(kept.fileno(), 2)
            failed = True
            try:
                yield
                failed = False
            finally:
                os.dup2(saved, 2)
                kept.seek(0)
                text = kept.read().decode(errors="replace")
                said.append(text)
                if text and not failed:
                    sys.stderr.write(text)
    finally:
        os.close(saved)


def _library_reason(text: str) -> str:
    """ALSA's first and last reasons (`... (snd_pcm_open_noupdate) Unknown PCM x` -> the tail)."""
    reasons = [line.split(") ", 1)[-1].strip() for line in text.splitlines() if line.strip()]
    if not reasons:
        return ""
    return reasons[0] if len(reasons) == 1 or reasons[0] == reasons[-1] else \
        f"{reasons[0]} ... {reasons[-1]}"


@dataclasses.dataclass
class Frame:
    """One frame on the run's grid."""

    time_s: float        # media time it stands for
    image: np.ndarray    # RGB uint8, resized as extraction resizes
    arrived: float       # perf_counter() when it was read (latency starts here)


class FrameQueue:
    """Frames between the reader and the model; live sources drop the oldest when full."""

    def __init__(self, capacity: int, drop_oldest: bool) -> None:
        self.capacity, self.drop_oldest = capacity, drop_oldest
        self.frames: collections.deque[Frame] = collections.deque()
        self.cond = threading.Condition()
        self.closed = False
        self.dropped = 0
        self.reader_waiting = False  # the reader waits for room: nothing more comes until taken

    def put(self, frame: Frame) -> bool:
        """Queue a frame; False when the queue was closed (stop reading)."""
        with self.cond:
            if self.drop_oldest:
                while len(self.frames) >= self.capacity:
                    self.frames.popleft()
                    self.dropped += 1
            else:
                while len(self.frames) >= self.capacity and not self.closed:
                    self.reader_waiting = True
                    self.cond.notify_all()
                    self.cond.wait()
                self.reader_waiting = False
            if self.closed:
                return False
            self.frames.append(frame)
            self.cond.notify_all()
            return True

    def take(self, at_most: int, at_least: int = 1) -> list[Frame]:
        """Up to `at_most` frames, oldest first, waiting for `at_least` (fewer at the end)."""
        with self.cond:
            while len(self.frames) < at_least and not self.closed and not self.reader_waiting:
                self.cond.wait(0.5)
            n = min(at_most, len(self.frames))
            taken = [self.frames.popleft() for _ in range(n)]
            self.cond.notify_all()
            return taken

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    @property
    def finished(self) -> bool:
        with self.cond:
            return self.closed and not self.frames


class AudioBuffer:
    """Mono samples at one rate on the video's media clock, the last `keep_s` seconds kept."""

    def __init__(self, sample_rate: int, keep_s: float) -> None:
        self.sample_rate = sample_rate
        self.keep = int(keep_s * sample_rate)
        self.start_s: float | None = None  # media time of samples[0]
        self.samples = np.zeros(0, np.float32)
        self.received = 0  # samples appended in all (the kept ones and those let go)
        self.cond = threading.Condition()
        self.ended = False

    def append(self, time_s: float, samples: np.ndarray) -> None:
        with self.cond:
            if self.start_s is None:
                self.start_s = time_s
            self.samples = np.concatenate([self.samples, samples])
            self.received += len(samples)
            excess = len(self.samples) - self.keep
            if excess > 0:
                self.samples = self.samples[excess:]
                self.start_s += excess / self.sample_rate
            self.cond.notify_all()

    @property
    def end_s(self) -> float:
        return (self.start_s or 0.0) + len(self.samples) / self.sample_rate

    def wait_until(self, time_s: float, queue: FrameQueue, limit_s: float) -> None:
        """Wait until the samples reach `time_s`, the audio ends, or `limit_s` passes."""
        deadline = time.perf_counter() + limit_s
        with self.cond:
            while (self.start_s is None or self.end_s < time_s) and not self.ended \
                    and not queue.reader_waiting and time.perf_counter() < deadline:
                self.cond.wait(0.05)

    def window(self, start_s: float, end_s: float) -> tuple[float, np.ndarray]:
        """Samples from `start_s` (or the oldest kept) up to `end_s`: (their start time, them)."""
        with self.cond:
            if self.start_s is None:
                return start_s, np.zeros(0, np.float32)
            first = max(0, int(round((start_s - self.start_s) * self.sample_rate)))
            last = max(first, min(len(self.samples),
                                  int(round((end_s - self.start_s) * self.sample_rate))))
            return self.start_s + first / self.sample_rate, self.samples[first:last].copy()

    def finish(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify_all()


def _mono(frame: av.AudioFrame) -> np.ndarray:
    planes = frame.to_ndarray()  # fltp: [channels, samples]
    return planes.mean(axis=0).astype(np.float32) if planes.ndim == 2 else planes


@dataclasses.dataclass
class ReaderStats:
    decoded: int = 0          # video frames decoded
    grid_frames: int = 0      # frames put on the run's grid (queued or dropped)
    end_reason: str = ""      # "end of media" | "idle timeout" | "stopped" | an error line
    first_time_s: float | None = None
    last_time_s: float | None = None


class Reader(threading.Thread):
    """Reads a source (and optionally a separate audio source) into a queue and audio buffers.

    `fps` is the run's frame rate, `decode_size` the shorter side extraction resized to,
    `sample_rates` the rates the audio encoders want. `realtime` paces a file at its own rate.
    """

    def __init__(self, spec: SourceSpec, queue: FrameQueue, fps: float,
                 decode_size: int | None, sample_rates: list[int], audio_keep_s: float,
                 idle_timeout_s: float, realtime: bool = False,
                 audio_spec: SourceSpec | None = None) -> None:
        super().__init__(name="affect-live-reader", daemon=True)
        self.spec, self.queue, self.fps = spec, queue, fps
        self.decode_size, self.realtime = decode_size, realtime
        self.idle_timeout_s = idle_timeout_s
        self.audio = {rate: AudioBuffer(rate, audio_keep_s) for rate in sample_rates}
        self.audio_spec = audio_spec
        self.stats = ReaderStats()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.container = open_source(spec, idle_timeout_s)
        self.audio_container = (open_source(audio_spec, idle_timeout_s, max(sample_rates or [0]))
                                if audio_spec else None)
        self.microphone: threading.Thread | None = None
        self.video = next((s for s in self.container.streams.video
                           if not s.disposition & av.stream.Disposition.attached_pic), None)
        if self.video is None:
            raise UserError(f"{spec.url}: has no video stream")
        self.video.thread_type = "AUTO"
        own_audio = self.container.streams.audio
        self.audio_stream = own_audio[0] if own_audio and audio_spec is None else None
        self.resamplers = {rate: av.AudioResampler(format="fltp", rate=rate)
                           for rate in sample_rates}
        # the video clock against the wall clock, to place a separate microphone on it
        self.clock: tuple[float, float] | None = None  # (media time, perf_counter) of frame 1
        self.last_packet = time.perf_counter()

    @property
    def has_audio(self) -> bool:
        return bool(self.audio) and (self.audio_stream is not None
                                     or self.audio_container is not None)

    def stop(self) -> None:
        self.stop_event.set()
        self.queue.close()

    def run(self) -> None:
        if self.audio_container is not None and self.audio:
            self.microphone = threading.Thread(target=self._read_microphone,
                                               name="affect-live-mic", daemon=True)
            self.microphone.start()
        try:
            self._read()
        except BaseException as exc:  # reaches the caller, which says it in one line
            self.error = exc
        finally:
            for buffer in self.audio.values():
                buffer.finish()
            self.queue.close()

    def _read(self) -> None:
        wall0: float | None = None
        media0: float | None = None
        for time_s, item in _grid(self._decoded(), self.fps, None, None):
            if self.stop_event.is_set():
                self.stats.end_reason = "stopped"
                return
            if self.realtime:  # a file at its own pace
                if wall0 is None:
                    wall0, media0 = time.perf_counter(), time_s
                delay = (time_s - media0) - (time.perf_counter() - wall0)
                if delay > 0:
                    time.sleep(delay)
            image = np.ascontiguousarray(resize(item.load(), self.decode_size, "shorter"))
            if self.stats.first_time_s is None:
                self.stats.first_time_s = time_s
            self.stats.last_time_s = time_s
            self.stats.grid_frames += 1
            if not self.queue.put(Frame(time_s, image, time.perf_counter())):
                self.stats.end_reason = self.stats.end_reason or "stopped"
                return
        if not self.stats.end_reason:
            self.stats.end_reason = "end of media"

    def _decoded(self) -> Iterator[_Decoded]:
        """Video frames as extraction's decoder gives them; audio goes to the buffers."""
        streams = [self.video] + ([self.audio_stream] if self.audio_stream is not None
                                  and self.audio else [])
        last_time: float | None = None
        try:
            for packet in self.container.demux(*streams):
                self.last_packet = time.perf_counter()
                if self.stop_event.is_set():
                    return
                for frame in packet.decode():
                    if isinstance(frame, av.AudioFrame):
                        self._add_audio(frame, frame.time)
                        continue
                    self.stats.decoded += 1
                    time_s = float(frame.pts * frame.time_base) if frame.pts is not None \
                        else (last_time or 0.0) + 1.0 / self.fps
                    if last_time is not None and time_s <= last_time + 1e-6:
                        continue  # a repeated timestamp: the first one wins, as in extraction
                    last_time = time_s
                    if self.clock is None:
                        self.clock = (time_s, time.perf_counter())
                    duration = (float(frame.duration * frame.time_base)
                                if frame.duration and frame.time_base else None)
                    orientation = orientation_of(frame)
                    yield _Decoded(-1, time_s, duration,
                                   lambda frame=frame, orientation=orientation:
                                   orientation.apply(frame.to_ndarray(format="rgb24")))
        except (av.FFmpegError, OSError) as exc:
            # FFmpeg's read timeout interrupts a blocked read: that is the idle timeout
            if self.spec.live and isinstance(exc, av.ExitError):
                self.stats.end_reason = "idle timeout"
                return
            raise UserError(f"{self.spec.url}: reading failed after {self.stats.decoded} "
                            f"frames ({getattr(exc, 'strerror', None) or exc})") from None
        finally:
            for rate, resampler in self.resamplers.items():
                if self.audio_stream is not None:
                    for out in resampler.resample(None):
                        self._push(rate, out)

    def _add_audio(self, frame: av.AudioFrame, time_s: float | None) -> None:
        for rate, resampler in self.resamplers.items():
            buffer = self.audio[rate]
            for out in resampler.resample(frame):
                if buffer.start_s is None:
                    buffer.start_s = time_s if time_s is not None else 0.0
                self._push(rate, out)

    def _push(self, rate: int, out: av.AudioFrame) -> None:
        buffer = self.audio[rate]
        buffer.append(buffer.end_s if buffer.start_s is not None else 0.0, _mono(out))

    def _read_microphone(self) -> None:
        """A separate microphone: its first sample is placed on the video clock by the wall
        clock (two devices share no timestamps), then its samples run on from there.

        A device may hand over a sample or two per read: its packets are joined into chunks
        of `MIC_CHUNK_S` before they are decoded, resampled and buffered, or the per-packet
        cost would fall behind real time. One that delivers faster than real time (a file
        behind an ALSA plugin, a device's clock running fast) is held while it is `MIC_AHEAD_S`
        ahead of the video clock, so the buffers keep the audio of the frames being encoded."""
        assert self.audio_container is not None
        stream = self.audio_container.streams.audio[0]
        codec = stream.codec_context
        # Devices hand over raw PCM, whose packets join into one: one decode per chunk (PyAV's
        # decode and frame costs, paid per packet, are more than a sample's time at 16 kHz).
        sample_bytes = codec.format.bytes * codec.channels  # one sample of every channel
        chunk_bytes = (max(1, round(MIC_CHUNK_S * codec.sample_rate)) * sample_bytes
                       if codec.name.startswith("pcm_") else 1)
        pending: list[bytes] = []
        pending_bytes = 0
        first_time: float | None = None  # media time of the first sample, once placed
        try:
            for packet in self.audio_container.demux(stream):
                if self.stop_event.is_set():
                    return
                if self.clock is None or not packet.size:
                    continue  # no video yet: nothing to align the microphone to
                if first_time is None:
                    first_time = (self._video_now()
                                  - packet.size / sample_bytes / codec.sample_rate)
                pending.append(bytes(packet))
                pending_bytes += packet.size
                if pending_bytes < chunk_bytes:
                    continue
                for frame in codec.decode(av.Packet(b"".join(pending))):
                    self._add_audio(frame, first_time)
                pending, pending_bytes = [], 0
                self._hold_microphone()
        except (av.FFmpegError, OSError):
            return  # the microphone went away: video goes on, audio rows stay as they were
        finally:
            for buffer in self.audio.values():
                buffer.finish()

    def _video_now(self) -> float:
        """The video clock's media time now (frame 1's time plus the wall time since)."""
        assert self.clock is not None
        media, wall = self.clock
        return media + (time.perf_counter() - wall)

    def _hold_microphone(self) -> None:
        while not self.stop_event.is_set():
            ahead = min(b.end_s for b in self.audio.values()) - self._video_now()
            if ahead <= MIC_AHEAD_S:
                return
            self.stop_event.wait(ahead - MIC_AHEAD_S)

    def close(self) -> None:
        self.stop()
        self.join(timeout=self.idle_timeout_s + 2)
        if self.microphone is not None:
            # closing a container while a thread decodes from it crashes the process
            self.microphone.join(timeout=self.idle_timeout_s + 2)
        for container, thread in ((self.container, self),
                                  (self.audio_container, self.microphone)):
            if container is not None and not (thread is not None and thread.is_alive()):
                container.close()
