"""Training-loop benchmark: how much of a step waits for data, and steps per second.

Builds (once, cached) a synthetic Aff-Wild2-sized-ish store: `--videos` videos of `--frames`
frames at 30 Hz with a 1280-d face stream (HSEmotion-sized, 30 Hz) and a 128-d VGGish-sized
stream (0.96 s hop, aligned by nearest row), plus valence/arousal labels. Then trains the
`transformer-lstm` head with its paper configuration (chunks of 250, 16 videos in parallel) for
one epoch through the shared trainer, with the background batch preparation on and off, and
prints a markdown table. Target: data wait < 5% of step time.

    .venv/bin/python bench/train.py                  # 50 x 3000 frames, device auto
    .venv/bin/python bench/train.py --videos 10 --frames 1000 --device cpu
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from features_store import StreamInfo, open_store
from heads.base import apply_overrides
from heads.registry import get_head
from heads.trainer import resolve_device, train
from heads.transformer_family.head import ChunkBatches, plan_chunks

FACE_DIM, AUDIO_DIM, FPS, VGGISH_HOP_S = 1280, 128, 30.0, 0.96


def build_store(path: Path, videos: int, frames: int, seed: int = 0) -> Path:
    """Random features and smooth labels; the last 10% of videos (at least 1) are validation."""
    if (path / "store.json").exists():
        return path
    rng = np.random.default_rng(seed)
    store = open_store(str(path), mode="a", dataset="affwild2")
    face = store.create_stream(StreamInfo(name="hsemotion-enet-b0", dim=FACE_DIM,
                                          frame_shift_s=1 / FPS))
    audio = store.create_stream(StreamInfo(name="vggish", dim=AUDIO_DIM,
                                           frame_shift_s=VGGISH_HOP_S))
    labels = store.create_stream(StreamInfo(name="affwild2-va", kind="label", dim=2,
                                            frame_shift_s=1 / FPS))
    n_val = max(1, videos // 10)
    clips = []
    t = np.arange(frames) / FPS
    with (store.part_writer(face, "p0") as face_w, store.part_writer(audio, "p0") as audio_w,
          store.part_writer(labels, "p0") as label_w):
        for k in range(videos):
            clip_id = f"video{k:03d}"
            va = 0.8 * np.sin(2 * np.pi * t[:, None] * rng.uniform(0.02, 0.2, 2)
                              + rng.uniform(0, 6, 2))
            face_w.write_clip(clip_id, rng.standard_normal((frames, FACE_DIM), np.float32))
            n_audio = int(frames / FPS / VGGISH_HOP_S) + 1
            audio_w.write_clip(clip_id, rng.standard_normal((n_audio, AUDIO_DIM), np.float32))
            label_w.write_clip(clip_id, va.astype(np.float32))
            clips.append({"clip_id": clip_id, "split": "val" if k >= videos - n_val else "train",
                          "duration": frames / FPS})
    store.add_clips(clips)
    store.finalize()
    return path


def assembly_ms(head, data, n: int = 20) -> float:
    """Milliseconds to assemble one chunk batch (gather + zero padding), no model."""
    seqs = data.sequences("train")
    order = np.arange(len(seqs))
    clips, starts = plan_chunks(seqs.lengths, order, head.config.batch_size, head.config.chunk)
    batches = ChunkBatches(seqs, clips[:n], starts[:n], head.config.chunk)
    t0 = time.perf_counter()
    count = sum(1 for _ in batches)
    return (time.perf_counter() - t0) / max(count, 1) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--head", default="transformer-lstm")
    parser.add_argument("--store", default=None, help="Store path (default: a temp folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="Extra head config overrides key=value.")
    args = parser.parse_args()

    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    store_path = Path(args.store) if args.store else tmp / "affwild2-bench.zarr"
    reused = (store_path / "store.json").exists()
    t0 = time.perf_counter()
    build_store(store_path, args.videos, args.frames)
    built = "reused" if reused else f"built in {time.perf_counter() - t0:.1f} s"

    cls = get_head(args.head)
    rows = []
    try:
        probe = cls(apply_overrides(cls.config_cls(), [
            "features=hsemotion-enet-b0,vggish", *args.overrides]))
        batch_ms = assembly_ms(probe, probe.build_data(open_store(str(store_path), mode="r")))
        for prefetch in (2, 0):
            config = apply_overrides(cls.config_cls(), [
                "features=hsemotion-enet-b0,vggish", "epochs=1", *args.overrides])
            head = cls(config)
            run = tmp / f"run-prefetch{prefetch}"
            t0 = time.perf_counter()
            result = train(head, str(store_path), run, device=device, progress=False,
                           prefetch=prefetch)
            wall = time.perf_counter() - t0
            busy = result.data_wait_s + result.compute_s
            rows.append({
                "prefetch": prefetch, "steps": result.steps,
                "steps_per_s": result.steps / busy if busy else 0.0,
                "wait_share": result.data_wait_share,
                "wait_ms": result.data_wait_s / max(result.steps, 1) * 1000,
                "compute_ms": result.compute_s / max(result.steps, 1) * 1000,
                "assembly_ms": batch_ms, "wall_s": wall,
            })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n### Training loop: {args.head}, {args.videos} videos x {args.frames} frames x "
          f"{FACE_DIM}+{AUDIO_DIM} features, chunk {head.config.chunk}, batch "
          f"{head.config.batch_size}, device {gpu} (torch threads {torch.get_num_threads()}), "
          f"AMP {head.config.amp if device.type == 'cuda' else 'off'}; store {built}\n")
    print("| batches prepared ahead | steps | steps/s | data wait share | wait ms/step "
          "| compute ms/step | batch assembly ms | epoch wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['prefetch']} | {r['steps']} | {r['steps_per_s']:.2f} | "
              f"{100 * r['wait_share']:.2f}% | {r['wait_ms']:.1f} | {r['compute_ms']:.1f} | "
              f"{r['assembly_ms']:.1f} | {r['wall_s']:.1f} |")


if __name__ == "__main__":
    main()
