"""What the clip fingerprint costs (issue 17, item 13): a sha256 of the whole media file against
the former digest of its first and last 64 KiB, and against decoding the same file.

A new clip record hashes each source once (a rerun recognises an untouched file by one `stat`);
the run decodes the same file anyway, so the cost that matters is the digest beside the decode.
The file is written once (textured frames, so H.264 produces realistic sizes) and read from the
page cache by all three, as it is when the extraction decodes it right after hashing it.

    .venv/bin/python bench/fingerprint.py                         # 1280x720, 20 s
    .venv/bin/python bench/fingerprint.py --seconds 60 --size 640x360
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

from extract.definition import source_digest  # noqa: E402
from extract.media import iter_video_frames  # noqa: E402
from pipelines.synthetic.av_writer import write_video  # noqa: E402

SAMPLED_BYTES = 64 * 1024  # what the former digest read: the first and last 64 KiB


def sampled_digest(path: str) -> str:
    """The former fingerprint, for comparison only: size plus the first and last 64 KiB."""
    digest = hashlib.sha256()
    size = os.path.getsize(path)
    digest.update(f":{size};".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(SAMPLED_BYTES))
        if size > SAMPLED_BYTES:
            handle.seek(max(SAMPLED_BYTES, size - SAMPLED_BYTES))
            digest.update(handle.read(SAMPLED_BYTES))
    return digest.hexdigest()


def textured_frames(n: int, height: int, width: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
    for k in range(n):
        shift = k % 8
        yield np.ascontiguousarray(big[shift:shift + height, shift:shift + width])


def best_of(repeats: int, call) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        n = int(args.seconds * args.fps)
        write_video(path, textured_frames(n, height, width), fps=args.fps)
        size_mb = os.path.getsize(path) / 1e6
        source_digest(path)  # into the page cache, as after the extraction's own first read
        full_s = best_of(args.repeats, lambda: source_digest(path))
        sampled_s = best_of(args.repeats, lambda: sampled_digest(path))
        decode_s = best_of(1, lambda: sum(len(b) for b in iter_video_frames(path)))
    print(f"file: {size_mb:.1f} MB, {n} frames {width}x{height} at {args.fps:g} fps")
    print(f"full sha256 digest:     {full_s * 1e3:9.1f} ms  ({size_mb / full_s:7.0f} MB/s)")
    print(f"sampled 2x64 KiB digest:{sampled_s * 1e3:9.1f} ms")
    print(f"decode (PyAV, all frames): {decode_s * 1e3:6.0f} ms")
    print(f"full digest / decode: {full_s / decode_s:.3f}; full / sampled: "
          f"{full_s / max(sampled_s, 1e-9):.0f}x")


if __name__ == "__main__":
    main()
