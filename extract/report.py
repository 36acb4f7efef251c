"""What a run is asked to do and what it reports: plain dataclasses, importable without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from features_store.printable import printable
from features_store.tables import format_table, plural

from .plan import DEFAULT_VIDEO_FPS


@dataclass
class ExtractOptions:
    encoders: list[str]
    weights: str = "default"
    device: str = "auto"
    batch_size: int = 64
    # Intra-op threads of every CPU forward: fixed, and part of the stream key, so a stream's
    # values do not depend on the machine or the scheduler (extract.numerics).
    threads: int = 1
    limit: int | None = None
    reduced: bool = False
    dtype: str = "float16"
    fps: float = DEFAULT_VIDEO_FPS
    # Shorter side to scale frames to while decoding (once, shared by every video encoder),
    # before each encoder's own preprocessing; None keeps the decoded size (exact parity with
    # the upstream transforms on full frames).
    decode_size: int | None = None
    clips_per_part: int = 32
    decode_workers: int = 2
    # "threads", "processes" (decoding scales with cores), or "auto": processes when a CUDA
    # device waits for more than one worker, threads otherwise (nothing to start).
    decode_in: str = "auto"
    decoder: str = "pyav"  # "pyav" | "torchcodec" | "torchcodec:cuda" (extract.media_torchcodec)
    # How whole frames are resized before each encoder's crop and normalisation: "pil" (the
    # upstream transforms, exact) or "tensor" (torchvision's uint8 kernels on the batch, about
    # 2.5x faster on 720p, within one grey level; part of the stream key). Each distinct resize
    # step runs once per frame either way and is shared by the encoders that need it.
    resize_with: str = "pil"
    strict: bool = False
    encoder_options: dict[str, dict] = field(default_factory=dict)
    # augmented views of every video stream, each its own stream (extract/views.py)
    views: list[str] = field(default_factory=list)


@dataclass
class StreamStats:
    alias: str
    clips: int = 0
    rows: int = 0
    model_s: float = 0.0


@dataclass
class ExtractReport:
    clips_total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    partial: int = 0  # failed clips that kept some of their streams (e.g. video, not audio)
    seconds: float = 0.0
    frames: int = 0
    streams: dict[str, StreamStats] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    ledger: str = ""
    notes: list[str] = field(default_factory=list)  # what the user must hear of, not failures

    def merge(self, other: ExtractReport) -> None:
        self.done += other.done
        self.failed += other.failed
        self.partial += other.partial
        self.frames += other.frames
        self.failures += other.failures
        for key, s in other.streams.items():
            mine = self.streams.setdefault(key, StreamStats(s.alias))
            mine.clips += s.clips
            mine.rows += s.rows
            mine.model_s += s.model_s


SUMMARY_FAILURES = 5  # failure lines repeated in the end summary; the ledger has them all


def failure_line(record: dict) -> str:
    """One failure as the user reads it: the clip id, the stream, then the file and reason."""
    name = record.get("alias") or record.get("stream")
    stream = f", stream {name}" if name else ""
    # Escaped: the clip id and the message (file names, library errors) are others' text.
    return printable(f"  failed: clip {record.get('clip_id')!r}{stream}: {record.get('message')}")


def format_report(report: ExtractReport) -> str:
    whole = report.failed - report.partial  # clips that lost every stream
    counts = (f"clips: {report.clips_total} total, {report.done} done, {report.skipped} skipped "
              f"(already in the store), {whole} failed")
    if report.partial:
        counts += f", {report.partial} partly extracted"
    lines = [f"{counts}; {plural(report.frames, 'frame')} in {report.seconds:.1f} s"]
    rows = [{"stream": s.alias, "clips": s.clips, "rows": s.rows, "model s": s.model_s,
             "rows/s": s.rows / s.model_s if s.model_s > 0 else 0.0}
            for s in report.streams.values()]
    lines.append(format_table(rows, ["stream", "clips", "rows", "model s", "rows/s"],
                              decimals=2))
    lines += [f"note: {note}" for note in report.notes]
    if report.failed:
        lines += failed_streams_lines(report)
        lines.append(f"the failure ledger is at {report.ledger} (`affect store ledger STORE`)")
        lines += [failure_line(f) for f in report.failures[:SUMMARY_FAILURES]]
        if len(report.failures) > SUMMARY_FAILURES:
            lines.append(f"  ... and {len(report.failures) - SUMMARY_FAILURES} more in the ledger")
    return "\n".join(lines)


def failed_streams_lines(report: ExtractReport) -> list[str]:
    """A failed stream is not a failed clip: one line per kind of loss ("1 clip: 1 of 2 streams
    failed (its other stream is kept)", "2 clips: every stream failed")."""
    streams = len(report.streams)
    lost: dict[str, set] = {}
    for record in report.failures:
        lost.setdefault(record.get("clip_id"), set()).add(record.get("stream"))
    groups: dict[int | None, int] = {}  # streams lost -> clips; None: every stream
    for keys in lost.values():
        every = None in keys or len(keys) >= streams
        groups[None if every else len(keys)] = groups.get(None if every else len(keys), 0) + 1
    lines = []
    for n_lost, clips in sorted(groups.items(), key=lambda item: item[0] or streams + 1):
        if n_lost is None:
            lines.append(f"{plural(clips, 'clip')}: every stream failed")
            continue
        kept = streams - n_lost
        lines.append(f"{plural(clips, 'clip')}: {n_lost} of {streams} streams failed (its other "
                     f"{'stream is' if kept == 1 else f'{kept} streams are'} kept)")
    return lines


def interrupted_message(store_url: str, clips_this_run: int | None = None) -> str:
    """What Ctrl-C leaves behind: every committed part stays, the task in flight is dropped."""
    done = (f"the {clips_this_run} clip(s) finished in this run and all earlier ones"
            if clips_this_run is not None else "every committed part")
    return (f"{done} are kept in {store_url} (only the part in flight is dropped); rerun the "
            "same command to resume: finished clips are skipped")
