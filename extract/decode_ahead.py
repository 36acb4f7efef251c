"""Decoding ahead of the model: clips are decoded and preprocessed while the device encodes.

Two ways to run the producers, chosen by `DecodeSettings.processes`:

- threads (the default for small runs: nothing to start): up to ``workers`` clips decode at
  once in threads. PyAV holds the GIL while it decodes and converts frames, so threads overlap
  decoding with the model but never use more than about one core for decoding;
- processes: ``workers`` decode processes, each with one FFmpeg codec thread and one torch
  thread, so decoding scales with cores. Clip ``i`` goes to worker ``i % workers``; each worker
  has its own result queue, read in clip order, so clips still reach the model in order. A batch
  crosses the process boundary through shared memory (torch.multiprocessing): the worker writes
  its tensor into a shared segment once and the consumer maps that segment, no copy on the
  receiving side. Workers are forked from a forkserver that imported this module once, so a
  worker starts in milliseconds and never inherits the parent's threads or CUDA state.

Either way the same `decode_clip` runs, so the frames and tensors are identical.

Per-encoder preprocessing of large frames (720p and up) costs more than decoding them, and
encoders that resize to the same size with the same filter would repeat it: `decode_clip`
resizes once per distinct resize step and hands the result to every encoder that shares it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from features_store.errors import UserError

from .malloc_tuning import keep_freed_memory
from .media import MediaError, iter_timed_audio, iter_video_frames, list_frame_folder
from .media_video import _BoxLookup, crop
from .plan import FACE_MARGIN_PX

log = logging.getLogger(__name__)

DECODE_BATCH = 32      # frames per decoded batch handed from a decode worker
QUEUE_DEPTH = 8        # decoded batches buffered per worker ahead of the model


@dataclass(frozen=True)
class DecodeSpec:
    """What decoding one stream needs, without the model: it pickles into worker processes."""

    key: str
    modality: str                 # "video" | "audio"
    fps: float | None = None      # video decode rate
    crop: str | None = None       # "face" | "body" | None
    preprocess: Callable[[np.ndarray], torch.Tensor] | None = None  # video: frames -> tensor
    sample_rate: int | None = None  # audio
    chunk_s: float | None = None    # audio


@dataclass(frozen=True)
class RawFrames:
    """A "preprocess" that keeps the decoded uint8 frames [N, H, W, 3]: decode-only runs."""

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(frames)


@dataclass(frozen=True)
class DecodeSettings:
    workers: int = 2
    processes: bool = False
    decode_size: int | None = None
    decoder: str = "pyav"
    resize_with: str = "pil"  # "pil" (the upstream transforms' values) | "tensor" (faster)


def spec_for(plan) -> DecodeSpec:
    """The decode side of a `StreamPlan`."""
    encoder = plan.encoder
    if plan.modality == "video":
        from .views import parse_view

        view = parse_view(plan.view) if getattr(plan, "view", None) else None
        return DecodeSpec(plan.info.key, "video", fps=plan.fps, crop=plan.crop,
                          preprocess=encoder.preprocessor_for(plan.crop, view))
    return DecodeSpec(plan.info.key, plan.modality, sample_rate=encoder.spec.sample_rate,
                      chunk_s=encoder.spec.chunk_s)


@dataclass
class VideoItem:
    group: tuple
    inputs: dict[str, torch.Tensor]  # stream key -> preprocessed frames
    times_s: np.ndarray


@dataclass
class AudioItem:
    stream_key: str
    time_s: float  # media time of the first sample
    samples: np.ndarray


@dataclass
class ClipEnd:
    pass


@dataclass
class StreamError:
    """Some streams of a clip cannot be made (the others go on): which, where, why."""

    stream_keys: tuple[str, ...]
    stage: str
    message: str


@dataclass
class ClipError:
    stage: str
    message: str


def failure(exc: Exception, source: object) -> tuple[str, str]:
    """(stage, message) for an exception met while decoding one clip for some streams.

    Anything may be raised here (a malformed clip record from the Python API, a bug in a
    decoder or a preprocess step), and all of it must reach the consumer: a decode worker that
    dies silently leaves the run waiting for it forever.
    """
    if isinstance(exc, MediaError):
        return exc.stage, str(exc)
    if isinstance(exc, UserError | ValueError | OSError):
        return "decode", f"{source}: {exc}"
    log.debug("unexpected error decoding %s", source, exc_info=exc)
    return "decode", f"{source}: unexpected {type(exc).__name__}: {exc}"


def video_source(clip: dict) -> str:
    return clip.get("video") or clip.get("frames")


def _box_lookup(clip: dict, crop_kind: str, source: str) -> _BoxLookup:
    # A clip without boxes of this kind is encoded on whole frames, as RAER's code does.
    boxes = (clip.get("boxes") or {}).get(crop_kind)
    names = [p.name for p in list_frame_folder(source)] if os.path.isdir(source) else None
    return _BoxLookup(boxes, names, source)


def _crop_or_full(frame: np.ndarray, box, margin: int) -> np.ndarray:
    return frame if box is None else crop(frame, box, margin)


def _shared_preprocess(frames: np.ndarray, group: Sequence[DecodeSpec],
                       resize_with: str = "pil") -> dict[str, torch.Tensor]:
    """Preprocess whole frames for every stream of a group, each resize step once.

    Streams whose transforms are equal get the same tensor (read-only downstream). For the
    upstream transforms (`ImagePreprocess`) the resize (size and filter) is done once per
    distinct step and shared, then each stream crops and normalises its copy: with
    ``resize_with="pil"`` through the very PIL/torchvision calls `ImagePreprocess` makes (same
    values), with ``"tensor"`` through torchvision's antialiased tensor resize on the whole
    batch (about 3x faster on 720p frames; values within one grey level of PIL's, so it is
    part of the stream key).
    """
    from extract.encoders.base import ImagePreprocess

    done: dict = {}
    resized: dict = {}
    inputs = {}
    for spec in group:
        try:
            token = (hash(spec.preprocess), spec.preprocess)
        except TypeError:  # an unhashable transform is never shared
            token = id(spec.preprocess)
        if token not in done:
            if isinstance(spec.preprocess, ImagePreprocess):
                done[token] = _upstream_transform(frames, spec.preprocess, resized, resize_with)
            else:
                done[token] = spec.preprocess(frames)
        inputs[spec.key] = done[token]
    return inputs


def _upstream_transform(frames: np.ndarray, pre, resized: dict, resize_with: str) -> torch.Tensor:
    """`pre(frames)`, with the resized frames looked up in (or added to) `resized`."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    mode = {"bilinear": InterpolationMode.BILINEAR,
            "bicubic": InterpolationMode.BICUBIC}[pre.interpolation]
    size = list(pre.resize) if isinstance(pre.resize, tuple) else pre.resize
    step = (resize_with, repr(size), pre.interpolation)
    if step not in resized:
        if resize_with == "tensor":
            from torchvision.transforms.v2 import functional as F2

            # v2's uint8 kernels: within one grey level of PIL (v1's float path is further).
            batch = torch.from_numpy(frames).permute(0, 3, 1, 2)
            resized[step] = F2.resize(batch, size, interpolation=mode, antialias=True)
        else:
            resized[step] = [F.resize(Image.fromarray(f), size, interpolation=mode)
                             for f in frames]
    images = resized[step]
    if resize_with == "tensor":
        if pre.crop is not None:
            images = F.center_crop(images, [pre.crop, pre.crop])
        x = images.float().div_(255)
        return F.normalize(x, list(pre.mean), list(pre.std)).contiguous()
    out = torch.empty((len(frames), 3, pre.size, pre.size), dtype=torch.float32)
    for i, image in enumerate(images):
        if pre.crop is not None:
            image = F.center_crop(image, [pre.crop, pre.crop])
        out[i] = F.normalize(F.to_tensor(image), list(pre.mean), list(pre.std))
    return out


def decode_clip(clip: dict, specs: Sequence[DecodeSpec], pending: set[str],
                put: Callable[[object], bool], settings: DecodeSettings,
                codec_threads: int | None = None) -> None:
    """Producer: decode one clip for every stream that needs it and `put` its items in order.

    ``put`` returns False when the consumer has stopped listening; the producer then returns.
    A source that fails fails only the streams fed from it (a video without an audio track
    keeps its video features); whatever is raised becomes a `StreamError` for those streams.
    The last item is `ClipEnd` (unless stopped).
    """
    video = [s for s in specs if s.modality == "video" and s.key in pending]
    by_fps: dict[float | None, list[DecodeSpec]] = {}
    for spec in video:
        by_fps.setdefault(spec.fps, []).append(spec)
    for fps, group in by_fps.items():  # one decode per distinct frame rate
        source = video_source(clip)
        try:
            lookups = {s.key: _box_lookup(clip, s.crop, source) for s in group if s.crop}
            whole = [s for s in group if not s.crop]
            for batch in iter_video_frames(
                source, fps=fps, batch_size=DECODE_BATCH, start_s=clip.get("start"),
                end_s=clip.get("end"), folder_fps=clip.get("fps") or 25.0,
                size=settings.decode_size, resize_mode="shorter",
                codec_threads=codec_threads, decoder=settings.decoder,
            ):
                inputs = (_shared_preprocess(batch.frames, whole, settings.resize_with)
                          if whole else {})
                for spec in group:
                    if not spec.crop:
                        continue
                    margin = FACE_MARGIN_PX if spec.crop == "face" else 0
                    lookup = lookups[spec.key]
                    crops = [_crop_or_full(frame, lookup(int(i)), margin)
                             for frame, i in zip(batch.frames, batch.source_index)]
                    inputs[spec.key] = torch.cat([spec.preprocess(c[None]) for c in crops])
                if not put(VideoItem((fps,), inputs, batch.times_s)):
                    return
        except Exception as exc:  # every failure must reach the consumer
            if not put(StreamError(tuple(s.key for s in group), *failure(exc, source))):
                return
    for spec in specs:
        if spec.modality != "audio" or spec.key not in pending:
            continue
        source = clip.get("audio") or clip.get("video")
        try:
            for time_s, samples in iter_timed_audio(
                    source, spec.sample_rate, chunk_s=spec.chunk_s or 30.0,
                    start_s=clip.get("start"), end_s=clip.get("end")):
                if not put(AudioItem(spec.key, time_s, samples)):
                    return
        except Exception as exc:  # every failure must reach the consumer
            if not put(StreamError((spec.key,), *failure(exc, source))):
                return
    put(ClipEnd())


def _putter(out, stop) -> Callable[[object], bool]:
    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False
    return put


def _is_last(item) -> bool:
    return isinstance(item, ClipEnd | ClipError)


class DecodeAhead:
    """Decode up to `settings.workers` clips concurrently, handing them over in clip order.

    Iterating yields ``(clip, items)`` per clip; ``items`` must be drained (or the iteration
    closed) before the next clip's items are read.
    """

    def __init__(self, clips: list[dict], specs: Sequence[DecodeSpec],
                 pending: dict[str, set[str]], settings: DecodeSettings) -> None:
        self.clips, self.specs, self.pending, self.settings = clips, list(specs), pending, settings
        self.workers = max(1, settings.workers)
        self._threads: list[threading.Thread] = []
        self._queues: list[queue.Queue] = []
        self._procs: list = []
        self._stop = None

    # -- threads --------------------------------------------------------------------------
    def _start_thread(self, i: int) -> None:
        q: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        clip = self.clips[i]
        t = threading.Thread(target=decode_clip, daemon=True, args=(
            clip, self.specs, self.pending[clip["clip_id"]], _putter(q, self._stop),
            self.settings))
        t.start()
        self._queues.append(q)
        self._threads.append(t)

    def _iter_threads(self) -> Iterator[tuple[dict, Iterator]]:
        self._stop = threading.Event()
        for i in range(min(self.workers, len(self.clips))):
            self._start_thread(i)
        for i, clip in enumerate(self.clips):
            yield clip, self._items(self._queues[i], self._threads[i])
            if i + self.workers < len(self.clips):
                self._start_thread(i + self.workers)

    # -- processes ------------------------------------------------------------------------
    def _iter_processes(self) -> Iterator[tuple[dict, Iterator]]:
        ctx = _process_context()
        self._stop = ctx.Event()
        n = min(self.workers, len(self.clips))
        results = [ctx.Queue(maxsize=QUEUE_DEPTH) for _ in range(n)]
        for w in range(n):
            jobs = [(clip, self.pending[clip["clip_id"]]) for clip in self.clips[w::n]]
            proc = ctx.Process(target=_worker_main, daemon=True, args=(
                jobs, self.specs, self.settings, results[w], self._stop))
            proc.start()
            self._procs.append(proc)
        self._queues = results
        for i, clip in enumerate(self.clips):
            yield clip, self._items(results[i % n], self._procs[i % n])

    def __iter__(self) -> Iterator[tuple[dict, Iterator]]:
        if self.settings.processes and len(self.clips) > 0:
            return self._iter_processes()
        return self._iter_threads()

    def _items(self, q, worker) -> Iterator:
        while True:
            try:
                item = q.get(timeout=0.5)
            except queue.Empty:
                if worker.is_alive():
                    continue
                if isinstance(worker, threading.Thread) and not q.empty():
                    continue
                # The worker catches everything it can; this is the last line of defence.
                code = getattr(worker, "exitcode", None)
                yield ClipError("decode", "the decode worker ended without a result"
                                + (f" (exit code {code})" if code is not None else ""))
                return
            yield item
            if _is_last(item):
                return

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for q in self._queues:
            if hasattr(q, "cancel_join_thread"):
                q.cancel_join_thread()
                q.close()


def _worker_main(jobs, specs, settings: DecodeSettings, results, stop) -> None:
    # One core each: FFmpeg's own frame threads and torch's intra-op threads would fight the
    # other workers for the same cores.
    torch.set_num_threads(1)
    keep_freed_memory()  # started from a dask worker, it inherits the nanny's malloc setting
    put = _putter(results, stop)
    for clip, pending in jobs:
        if stop.is_set():
            return
        decode_clip(clip, specs, pending, put, settings, codec_threads=1)
    # Stay alive until the consumer is done: a tensor in flight is received by asking this
    # process for its shared-memory handle, which dies with the process.
    stop.wait()


_CONTEXT = None


def _process_context():
    """A torch.multiprocessing forkserver context whose server has imported this module."""
    global _CONTEXT
    if _CONTEXT is None:
        import torch.multiprocessing as tmp

        ctx = tmp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        _CONTEXT = ctx
    return _CONTEXT


__all__ = ["DecodeAhead", "DecodeSettings", "DecodeSpec", "RawFrames", "decode_clip", "spec_for",
           "VideoItem", "AudioItem", "ClipEnd", "ClipError", "StreamError", "failure",
           "DECODE_BATCH", "QUEUE_DEPTH"]
