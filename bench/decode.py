"""Decode throughput (issue 12): frames/s with 1..N decode workers, frames checked identical.

Workers are the extraction runner's own (`extract.decode_ahead.DecodeAhead`), as processes
(one FFmpeg thread and one torch thread each) or threads, handing decoded uint8 frames over
exactly as they hand preprocessed tensors to the model. Every run's frames are hashed per clip
and compared with a plain in-process decode. Also PyAV against torchcodec in one process.

    .venv/bin/python bench/decode.py                       # 256x256, workers 1,2
    .venv/bin/python bench/decode.py --workers 1,4,8,16 --clips 32 --size 256
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from extract.decode_ahead import (  # noqa: E402
    ClipError,
    DecodeAhead,
    DecodeSettings,
    DecodeSpec,
    RawFrames,
    VideoItem,
)
from extract.media import iter_video_frames  # noqa: E402
from pipelines.synthetic.av_writer import write_video  # noqa: E402


def make_clips(folder: str, n: int, seconds: float, height: int, width: int,
               fps: float = 25.0) -> list[dict]:
    """Moving textured frames (blocky noise scrolling), so H.264 has real work to do."""
    os.makedirs(folder, exist_ok=True)
    clips = []
    for i in range(n):
        path = os.path.join(folder, f"d{height}x{width}-{i:04d}.mp4")
        if not os.path.exists(path):
            rng = np.random.default_rng(i)
            coarse = rng.integers(0, 256, size=(height // 4 + 8, width // 4 + 8, 3),
                                  dtype=np.uint8)
            texture = coarse.repeat(4, axis=0).repeat(4, axis=1)
            frames = (np.roll(texture, (k % 32, (2 * k) % 32), (0, 1))[:height, :width]
                      for k in range(int(seconds * fps)))
            write_video(path, frames, fps=fps)
        clips.append({"clip_id": f"c{i:04d}", "video": path})
    return clips


def reference_hashes(clips: list[dict]) -> dict[str, str]:
    out = {}
    for clip in clips:
        digest = hashlib.sha256()
        for batch in iter_video_frames(clip["video"], batch_size=32):
            digest.update(np.ascontiguousarray(batch.frames).tobytes())
        out[clip["clip_id"]] = digest.hexdigest()
    return out


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by this process and the given workers."""
    import psutil

    total = 0.0
    for pid in [os.getpid(), *pids]:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def decode_run(clips: list[dict], workers: int, processes: bool, decoder: str = "pyav",
               cpu: list | None = None, verify: bool = True) -> tuple[float, int, dict[str, str]]:
    """(seconds, frames, per-clip sha256) of decoding every clip through DecodeAhead.

    ``cpu``, if given, receives the CPU seconds the run used (consumer and workers): on a shared
    machine, wall time says how busy the neighbours were; CPU time per frame says what decoding
    costs. With ``verify=False`` the consumer only receives each batch and reads one pixel per
    frame (what decode throughput means: on two cores a hashing consumer takes its share of
    the cores the workers decode on), and no hashes are returned."""
    specs = [DecodeSpec("raw", "video", fps=None, preprocess=RawFrames())]
    pending = {c["clip_id"]: {"raw"} for c in clips}
    ahead = DecodeAhead(clips, specs, pending, DecodeSettings(workers, processes,
                                                              decoder=decoder))
    frames, hashes = 0, {}
    started = time.perf_counter()
    cpu_before = _cpu_s([])
    try:
        for clip, items in ahead:
            digest = hashlib.sha256()
            for item in items:
                if isinstance(item, VideoItem):
                    array = item.inputs["raw"].numpy()
                    if verify:
                        digest.update(np.ascontiguousarray(array).tobytes())
                    else:
                        int(array[:, 0, 0, 0].sum())  # the batch is received and mapped
                    frames += len(array)
                elif isinstance(item, ClipError):
                    raise RuntimeError(item.message)
            if verify:
                hashes[clip["clip_id"]] = digest.hexdigest()
        seconds = time.perf_counter() - started
        if cpu is not None:  # the workers are still up (they wait for close)
            cpu.append(_cpu_s([p.pid for p in ahead._procs]) - cpu_before)
    finally:
        ahead.close()
    return seconds, frames, hashes


def bench(clips: list[dict], worker_counts: list[int], rounds: int,
          decoders: list[str]) -> list[dict]:
    reference = reference_hashes(clips)
    decode_run(clips[:1], 1, True)  # start the forkserver (its imports) outside the timing
    rows = []
    for decoder in decoders:
        for processes in (True, False):
            for workers in worker_counts:
                if not processes and workers not in (1, 2):
                    continue
                best = None
                for _ in range(rounds):
                    cpu: list = []
                    seconds, frames, _ = decode_run(clips, workers, processes, decoder, cpu,
                                                    verify=False)
                    if best is None or seconds < best[0]:
                        best = (seconds, frames, cpu[0])
                # the same mode once more with a consumer that hashes every frame: the frames
                # are checked, and its frames/s shows what a busy consumer costs on few cores
                checked, checked_frames, hashes = decode_run(clips, workers, processes, decoder)
                rows.append({"decoder": decoder, "mode": "processes" if processes else "threads",
                             "workers": workers, "seconds": best[0], "frames": best[1],
                             "fps": best[1] / best[0], "identical": hashes == reference,
                             "cpu_ms": best[2] / best[1] * 1000,
                             "hashing_fps": checked_frames / checked})
    return rows


def table(rows: list[dict], label: str) -> list[str]:
    base = {(r["decoder"], r["mode"]): r for r in rows if r["workers"] == 1}
    lines = [f"| decoder | workers as | workers | frames | frames/s ({label}) | x 1 worker "
             "| CPU ms/frame | hashing consumer frames/s | x 1 worker | frames identical |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        one = base[(r["decoder"], r["mode"])]
        lines.append(f"| {r['decoder']} | {r['mode']} | {r['workers']} | {r['frames']} | "
                     f"{r['fps']:,.0f} | {r['fps'] / one['fps']:.2f} | {r['cpu_ms']:.2f} | "
                     f"{r['hashing_fps']:,.0f} | {r['hashing_fps'] / one['hashing_fps']:.2f} | "
                     f"{'yes' if r['identical'] else 'NO'} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--size", default="256", help="256 (square) or HxW, e.g. 720x1280")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--decoders", default="pyav", help="pyav,torchcodec")
    parser.add_argument("--tmp", default=None)
    args = parser.parse_args()
    height, _, width = args.size.partition("x")
    height, width = int(height), int(width or height)
    tmp = args.tmp or tempfile.mkdtemp(prefix="affect-decode-")
    clips = make_clips(os.path.join(tmp, "clips"), args.clips, args.seconds, height, width)
    load = os.getloadavg()[0]
    rows = bench(clips, [int(w) for w in args.workers.split(",")], args.rounds,
                 args.decoders.split(","))
    print(f"machine: {os.cpu_count()} cores, load average before the run {load:.2f}; "
          f"{len(clips)} clips of {args.seconds:g} s at {width}x{height}, 25 fps, H.264\n")
    print("\n".join(table(rows, f"{width}x{height}")))


if __name__ == "__main__":
    main()
