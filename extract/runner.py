"""The extraction runner: decode each clip once, feed every requested encoder, write parts.

Work is cut into tasks of a few clips; each task writes one part per stream and commits it with
its manifest, so a killed run loses at most the task in flight and a rerun skips every clip
already committed under the same stream key (a changed setting means a new key, a new stream).

Inside a task, background threads decode (and preprocess) the next clips while the model works
on the current ones; frames of consecutive clips are packed into full batches so the device
stays busy; outputs stream into the part writers, so memory does not grow with clip length.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field

import numpy as np
import torch

from features_store import FeatureStore, PartCommitted
from features_store.errors import Interrupted, UserError
from features_store.fingerprint import fingerprint
from features_store.progress import ProgressLines, wants_progress_lines
from features_store.tables import plural

from .clips import check_clips, clip_table_record
from .decode_ahead import (
    AudioItem,
    ClipError,
    DecodeAhead,
    DecodeSettings,
    StreamError,
    VideoItem,
    spec_for,
)
from .definition import needs_new_record, refuse_changed_clips
from .numerics import fixed_threads, numerics_identity, numerics_record, padded_to
from .plan import (
    StreamPlan,
    compute_identity,
    parse_request,
    request_options,
    stream_info,
    view_info,
)
from .report import (
    ExtractOptions,
    ExtractReport,
    StreamStats,
    failure_line,
    format_report,
    interrupted_message,
)
from .resume import has_input, record_plans
from .views import VIEW_SEPARATOR, parse_view

log = logging.getLogger(__name__)

DEFAULT_PROGRESS_EVERY_S = 30.0  # progress lines when stderr is not a terminal (as dask runs)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: not a torch device (auto, cpu, cuda, cuda:1)") \
            from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")
    return device


# Encoders built in this process, reused by later runs (a notebook, a test session, a dask
# worker): building one can take seconds, and a warm rerun should not pay that twice. Built
# under a lock: two threads of one dask worker must share one copy, and a seeded random build
# must not interleave its draws from torch's global generator with another build's.
_ENCODERS: dict[tuple, object] = {}
_BUILD_LOCK = threading.Lock()


def get_encoder(name: str, options: ExtractOptions, device: str, marked: dict | None = None):
    """Encoder `name` with the run's options for it, and the options a request's markers set."""
    from .encoders import create_encoder

    extra = {**options.encoder_options.get(name, {}), **(marked or {})}
    key = (name, options.weights, device, options.reduced, repr(sorted(extra.items())))
    if options.weights not in ("default", "random") and os.path.exists(options.weights):
        key += (os.path.getmtime(options.weights),)  # a replaced weights file is a new encoder
    with _BUILD_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = create_encoder(
                name, weights=options.weights, device=device, reduced=options.reduced, **extra
            )
        return _ENCODERS[key]


def build_plans(options: ExtractOptions, device: str) -> list[StreamPlan]:
    plans: list[StreamPlan] = []
    views = [parse_view(v) for v in options.views]
    for request in options.encoders:
        name, crop_kind = parse_request(request)
        marked = request_options(request)
        encoder = get_encoder(name, options, device, marked)
        if encoder.spec.modality != "video" and crop_kind:
            raise UserError(f"encoder {request!r}: crops apply to video encoders only")
        fps = (encoder.spec.fps or options.fps) if encoder.spec.modality == "video" else None
        if crop_kind and options.decode_size:
            raise UserError(f"encoder {request!r}: --decode-size cannot be combined with crops "
                            "(boxes are in the source's pixel coordinates)")
        info = stream_info(encoder, crop_kind, fps, options.dtype)
        # The arguments as given, beside the resolved options in the key: what rebuilds this
        # encoder for new media (`affect predict --media`); not part of the key.
        info.extra["arguments"] = {**options.encoder_options.get(name, {}), **marked}
        if encoder.spec.modality == "video" and options.decode_size:
            info.preprocessing["decode_shorter_side"] = options.decode_size
        info.preprocessing["compute"] = compute_identity(device)
        info.preprocessing["numerics"] = numerics_identity(
            encoder.spec.modality, device, options.batch_size, options.threads)
        if encoder.spec.modality == "video" and options.resize_with != "pil" and not crop_kind:
            info.preprocessing["resize_with"] = options.resize_with
        if encoder.spec.modality == "video" and options.decoder != "pyav":
            info.preprocessing["decoder"] = options.decoder  # equal frames are tested, not assumed
        plans.append(StreamPlan(request, encoder, crop_kind, fps, info))
        if encoder.spec.modality == "video":
            plans.extend(StreamPlan(f"{request}{VIEW_SEPARATOR}{view.name}", encoder, crop_kind,
                                    fps, view_info(info, view.name), view.name)
                         for view in views)
    return plans


@dataclass
class Task:
    """A few clips; for each stream, which of them still need extracting."""

    clips: list[dict]
    pending: dict[str, list[str]]  # stream key -> clip ids
    # stream key -> how many earlier runs committed a part for these same pending clips (their
    # clips failed there); fixed when the task is made, so a recomputed task keeps its id.
    retry: dict[str, int] = dataclass_field(default_factory=dict)

    def part_id(self, stream_key: str) -> str:
        # Same clips -> same part id, so a rerun after a kill overwrites the orphan part.
        retry = self.retry.get(stream_key, 0)
        identity = [stream_key, self.pending[stream_key], *([retry] if retry else [])]
        return "x" + fingerprint(identity, 16)


def make_tasks(
    clips: list[dict], plans: list[StreamPlan], store: FeatureStore, clips_per_part: int
) -> tuple[list[Task], int]:
    """Chunk the clips that some stream still lacks into tasks; also count the skipped ones."""
    done = {p.info.key: store.committed_clip_ids(p.info) for p in plans}
    committed = {p.info.key: set(store.committed_parts(p.info)) for p in plans}
    todo, skipped = [], 0
    for clip in clips:
        missing = [p for p in plans
                   if clip["clip_id"] not in done[p.info.key] and has_input(clip, p.modality)]
        if missing:
            todo.append(clip)
        else:
            skipped += 1
    tasks = []
    for start in range(0, len(todo), clips_per_part):
        chunk = todo[start : start + clips_per_part]
        pending = {
            p.info.key: [c["clip_id"] for c in chunk
                         if c["clip_id"] not in done[p.info.key] and has_input(c, p.modality)]
            for p in plans
        }
        task = Task(chunk, {k: v for k, v in pending.items() if v})
        for key in task.pending:
            # A committed part of these very clips means they failed in an earlier run (else
            # they would be done): this attempt writes a new part beside it.
            while _is_committed(committed, key, task.part_id(key)):
                task.retry[key] = task.retry.get(key, 0) + 1
        tasks.append(task)
    return tasks, skipped


def _is_committed(committed: dict[str, set[str]], key: str, part_id: str) -> bool:
    return any(p == part_id or p.startswith(f"{part_id}.") for p in committed[key])


# ---------------------------------------------------------------------------------------------
# Running a task


@dataclass
class _OpenClip:
    clip_id: str
    t0: float
    expected: int | None = None  # known once the clip's decode has ended
    written: int = 0
    begun: bool = False


class _VideoBatcher:
    """Packs frames of consecutive clips into full device batches, for one stream.

    A clip's rows reach the part writer in order and whole: it is begun when its first rows come
    out of the model and ended when all its decoded frames have been encoded.
    """

    def __init__(self, plan: StreamPlan, writer, batch_size: int, device: str,
                 stats: StreamStats) -> None:
        self.plan, self.writer, self.batch_size, self.device = plan, writer, batch_size, device
        self.stats = stats
        self.pending: list[tuple[str, torch.Tensor]] = []
        self.pending_rows = 0
        self.clips: dict[str, _OpenClip] = {}

    def add(self, clip_id: str, t0: float, inputs: torch.Tensor) -> None:
        self.clips.setdefault(clip_id, _OpenClip(clip_id, t0))
        self.pending.append((clip_id, inputs))
        self.pending_rows += len(inputs)
        while self.pending_rows >= self.batch_size:
            self._forward(self.batch_size)

    def finish_clip(self, clip_id: str, rows: int) -> None:
        self.clips[clip_id].expected = rows
        self._close_finished()

    def drop_clip(self, clip_id: str) -> None:
        """Forget a clip that failed midway: its queued frames and its open rows."""
        if clip_id not in self.clips:
            return
        self.flush(before=clip_id)
        self.pending = [(c, x) for c, x in self.pending if c != clip_id]
        self.pending_rows = sum(len(x) for _, x in self.pending)
        if self.clips.pop(clip_id).begun:
            self.writer.drop_clip()

    def flush(self, before: str | None = None) -> None:
        """Encode everything queued (or everything queued ahead of clip `before`)."""
        while self.pending and self.pending[0][0] != before:
            n = 0
            for c, x in self.pending:
                if c == before:
                    break
                n += len(x)
            self._forward(min(n, self.batch_size))

    def _forward(self, n: int) -> None:
        taken: list[tuple[str, torch.Tensor]] = []
        need = n
        while need > 0:
            clip_id, x = self.pending[0]
            if len(x) <= need:
                taken.append(self.pending.pop(0))
                need -= len(x)
            else:
                taken.append((clip_id, x[:need]))
                self.pending[0] = (clip_id, x[need:])
                need = 0
        self.pending_rows -= n
        # Every forward has the same shape, so a frame's bits do not depend on how many frames
        # shared its batch (a task's tail, a resume's leftovers): see extract.numerics.
        batch = padded_to(torch.cat([x for _, x in taken]), self.batch_size)
        started = time.perf_counter()
        out = self.plan.encoder.encode_batch(_to_device(batch, self.device))
        out = out[:n].float().cpu().numpy()
        self.stats.model_s += time.perf_counter() - started
        row = 0
        for clip_id, x in taken:
            entry = self.clips[clip_id]
            if not entry.begun:
                self._close_finished()
                self.writer.begin_clip(clip_id, entry.t0)
                entry.begun = True
            self.writer.append(out[row : row + len(x)])
            entry.written += len(x)
            row += len(x)
        self.stats.rows += n
        self._close_finished()

    def _close_finished(self) -> None:
        for clip_id, entry in list(self.clips.items()):
            if entry.begun and entry.expected is not None and entry.written >= entry.expected:
                self.writer.end_clip()
                self.stats.clips += 1
                del self.clips[clip_id]


def _to_device(batch: torch.Tensor, device: str) -> torch.Tensor:
    if device.startswith("cuda"):
        return batch.pin_memory().to(device, non_blocking=True)
    return batch


class TaskRunner:
    """Runs tasks with encoders loaded once; used by the local loop and by each dask worker."""

    def __init__(self, store: FeatureStore, plans: list[StreamPlan], options: ExtractOptions,
                 device: str, on_clip: Callable[[int, int], None] | None = None) -> None:
        self.store, self.plans, self.options, self.device = store, plans, options, device
        self.on_clip = on_clip

    def run(self, task: Task) -> ExtractReport:
        report = ExtractReport()
        writers = {}
        for p in self.plans:
            if p.info.key in task.pending:
                numerics = numerics_record(p.info.extra.get("library"), self.device,
                                           self.options.batch_size, self.options.threads,
                                           p.modality)
                try:
                    writers[p.info.key] = self.store.part_writer(
                        p.info, task.part_id(p.info.key), numerics)
                except PartCommitted:  # another run (or attempt) committed this part: skip
                    continue
        plans = [p for p in self.plans if p.info.key in writers]
        stats = {p.info.key: StreamStats(p.info.alias) for p in plans}
        batchers = {
            p.info.key: _VideoBatcher(p, writers[p.info.key], self.options.batch_size,
                                      self.device, stats[p.info.key])
            for p in plans if p.modality == "video"
        }
        pending_by_clip: dict[str, set[str]] = {c["clip_id"]: set() for c in task.clips}
        for key, ids in task.pending.items():
            for clip_id in ids:
                pending_by_clip[clip_id].add(key)
        media_clips = [c for c in task.clips
                       if any(self._plan(k).modality != "text" for k in pending_by_clip[
                           c["clip_id"]])]
        ahead = DecodeAhead(media_clips, [spec_for(p) for p in plans if p.modality != "text"],
                            pending_by_clip, self.decode_settings())
        failed: set[str] = set()
        try:
            with torch.inference_mode(), self._autocast(), \
                    fixed_threads(self.device, self.options.threads):
                for clip, items in ahead:
                    frames, failed_keys = self._consume(
                        clip, items, pending_by_clip[clip["clip_id"]], batchers, writers, stats,
                        report)
                    if failed_keys:
                        failed.add(clip["clip_id"])
                        if len(failed_keys) < len(pending_by_clip[clip["clip_id"]]):
                            report.partial += 1
                    report.frames += frames
                    if self.on_clip:
                        self.on_clip(1, frames)
                for batcher in batchers.values():
                    batcher.flush()
                self._encode_texts(task, plans, writers, stats)
            for writer in writers.values():
                writer.commit()
        except BaseException:
            ahead.close()
            for writer in writers.values():
                if not writer.closed:
                    writer.abort()
            raise
        ahead.close()
        text_only = [c for c in task.clips if c not in media_clips]
        if self.on_clip and text_only:
            self.on_clip(len(text_only), 0)
        report.done = len(task.clips) - len(failed)
        report.failed = len(failed)
        report.streams = stats
        return report

    def decode_settings(self) -> DecodeSettings:
        mode = self.options.decode_in
        # Processes pay a start-up but scale with cores: worth it when a device waits for them.
        processes = mode == "processes" or (mode == "auto" and self.device.startswith("cuda")
                                            and self.options.decode_workers > 1)
        return DecodeSettings(self.options.decode_workers, processes, self.options.decode_size,
                              self.options.decoder, self.options.resize_with)

    def _plan(self, key: str) -> StreamPlan:
        return next(p for p in self.plans if p.info.key == key)

    def _autocast(self):
        if compute_identity(self.device)["precision"] == "float16-autocast":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", enabled=False)

    def _consume(self, clip, items, keys: set[str], batchers, writers, stats,
                 report) -> tuple[int, set[str]]:
        """Feed one clip's decoded items to the models: (frames fed, stream keys that failed).

        A failure ends only the streams it names; the clip's other streams are kept.
        """
        clip_id = clip["clip_id"]
        rows_fed: dict[str, int] = {}
        audio_open: set[str] = set()
        failed: set[str] = set()

        def fail(keys, stage: str, message: str) -> None:
            for key in keys:
                if key in batchers:
                    batchers[key].drop_clip(clip_id)
                    rows_fed.pop(key, None)
                elif key in audio_open:
                    writers[key].drop_clip()
                    audio_open.discard(key)
                failed.add(key)
                # "stream" is the key (what `verify` matches); the alias is for people.
                record = {"clip_id": clip_id, "stream": key,
                          "alias": self._plan(key).info.alias, "stage": stage,
                          "message": message}
                report.failures.append(record)
                self.store.add_failures([record])
                log.warning("%s", failure_line(record).strip())

        for item in items:
            if isinstance(item, VideoItem):
                for key, inputs in item.inputs.items():
                    batchers[key].add(clip_id, float(item.times_s[0]), inputs)
                    rows_fed[key] = rows_fed.get(key, 0) + len(inputs)
            elif isinstance(item, AudioItem):
                writer = writers[item.stream_key]
                plan = self._plan(item.stream_key)
                if item.stream_key not in audio_open:
                    # t0 from the audio's own timestamps: a track that starts after the video
                    # (ffprobe start_time > 0) must not be aligned as if it started with it.
                    writer.begin_clip(clip_id, float(item.time_s))
                    audio_open.add(item.stream_key)
                started = time.perf_counter()
                rows = plan.encoder.encode_audio(item.samples)
                stats[item.stream_key].model_s += time.perf_counter() - started
                stats[item.stream_key].rows += len(rows)
                writer.append(np.asarray(rows, dtype=np.float32))
            elif isinstance(item, StreamError):
                fail(item.stream_keys, item.stage, item.message)
            elif isinstance(item, ClipError):
                fail([k for k in sorted(keys) if k not in failed
                      and self._plan(k).modality != "text"], item.stage, item.message)
                return 0, failed
            else:  # ClipEnd
                for key, batcher in batchers.items():
                    if key in rows_fed:
                        batcher.finish_clip(clip_id, rows_fed[key])
                for key in audio_open:
                    writers[key].end_clip()
                    stats[key].clips += 1
                return max(rows_fed.values(), default=0), failed
        return 0, failed

    def _encode_texts(self, task, plans, writers, stats) -> None:
        for p in plans:
            if p.modality != "text":
                continue
            wanted = set(task.pending[p.info.key])
            clips = [c for c in task.clips if c["clip_id"] in wanted]
            started = time.perf_counter()
            # One utterance per forward: batched, its padding would follow its neighbours'
            # lengths, and so would its bits (extract.numerics).
            rows = [p.encoder.encode_text([str(c["text"])])[0] for c in clips]
            stats[p.info.key].model_s += time.perf_counter() - started
            for clip, row in zip(clips, np.asarray(rows)):
                start = float(clip.get("start") or 0.0)
                end = clip.get("end")
                writers[p.info.key].write_clip(clip["clip_id"], row[None, :], t0=start,
                                               t_end=None if end is None else float(end))
            stats[p.info.key].clips += len(clips)
            stats[p.info.key].rows += len(clips)


def prepare_store(store: FeatureStore, clips: list[dict], plans: list[StreamPlan]) -> None:
    """Create the streams and add clips the clip table lacks (one process, before any task)."""
    refuse_changed_clips(store, clips)  # before anything is written
    for p in plans:
        p.info = store.create_stream(p.info)
        # What this run means to commit, so `verify` can tell a complete stream from a cut one.
        store.record_intent(p.info, [c["clip_id"] for c in clips if has_input(c, p.modality)],
                            in_clip_table=True)
    records = {r["clip_id"]: r for r in store.clips()}
    new = [clip_table_record(c) for c in clips if needs_new_record(records.get(c["clip_id"]), c)]
    if new:
        store.add_clips(new)


def run_extraction(
    clips: list[dict],
    store: FeatureStore,
    options: ExtractOptions,
    progress: bool = True,
    progress_every_s: float | None = DEFAULT_PROGRESS_EVERY_S,
) -> ExtractReport:
    """Extract every requested stream for `clips` into `store`, resuming where it stopped.

    With ``progress``: a bar on a terminal; elsewhere (logs, CI) a line every
    ``progress_every_s`` seconds (None: no lines).
    """
    from tqdm import tqdm

    started = time.perf_counter()
    if options.limit is not None:
        clips = clips[: options.limit]
    check_clips(clips)
    device = resolve_device(options.device)
    options = replace(options, device=device)  # the stream keys hold the device used
    plans = build_plans(options, device)
    prepare_store(store, clips, plans)
    record_plans(store, plans, options)
    tasks, skipped = make_tasks(clips, plans, store, options.clips_per_part)
    report = ExtractReport(clips_total=len(clips), skipped=skipped,
                           notes=whole_frame_notes(tasks, plans))
    todo = sum(len(t.clips) for t in tasks)
    bar = tqdm(total=todo, desc="extract", unit="clip", disable=None if progress else True,
               dynamic_ncols=True)
    lines = (ProgressLines(todo, progress_every_s)
             if progress and progress_every_s and todo and wants_progress_lines() else None)
    frames_seen = [0]

    def on_clip(n: int, frames: int) -> None:
        frames_seen[0] += frames
        elapsed = max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(frames_s=f"{frames_seen[0] / elapsed:.1f}", refresh=False)
        bar.update(n)
        if lines is not None:
            lines.update(n, frames)

    runner = TaskRunner(store, plans, options, device, on_clip)
    try:
        with lines if lines is not None else contextlib.nullcontext():
            for task in tasks:
                report.merge(runner.run(task))
    except KeyboardInterrupt as exc:
        raise Interrupted(interrupted_message(store.url, report.done + report.partial)) from exc
    finally:
        bar.close()
    return finish_run(report, store, plans, started)


def whole_frame_notes(tasks: list[Task], plans: list[StreamPlan]) -> list[str]:
    """A note per crop stream (`@face`, `@body`) for the clips of this run that have no box of
    its kind: they are encoded on whole frames (as RAER's code does), which the user must hear
    of, since a `@face` stream then holds features of the whole scene for them."""
    notes = []
    for plan in plans:  # StreamPlans, or the dask client's RemotePlans: the request says it
        crop = parse_request(plan.request)[1]
        if not crop:
            continue
        bare = sorted(c["clip_id"] for task in tasks for c in task.clips
                      if c["clip_id"] in set(task.pending.get(plan.info.key, ()))
                      and not ((c.get("boxes") or {}).get(crop)))
        if bare:
            shown = ", ".join(repr(c) for c in bare[:3]) + (" ..." if len(bare) > 3 else "")
            notes.append(f"{plan.info.alias}: {plural(len(bare), 'clip')} without "
                         f"{crop} boxes ({shown}) encoded on whole frames")
    return notes


def finish_run(report: ExtractReport, store: FeatureStore, plans: list[StreamPlan],
               started: float) -> ExtractReport:
    """Finalize the store (this run's writers are all done) and complete the report."""
    store.refresh()
    store.finalize(prune_orphans=True)
    report.seconds = time.perf_counter() - started
    report.ledger = store.ledger_path()
    for p in plans:
        report.streams.setdefault(p.info.key, StreamStats(p.info.alias))
    return report


__all__ = ["ExtractOptions", "ExtractReport", "StreamStats", "format_report", "run_extraction"]
