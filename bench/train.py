"""Training-loop benchmark: how much of a step waits for data, and steps per second.

Builds (once, cached) a synthetic Aff-Wild2-sized-ish store: `--videos` videos of `--frames`
frames at 30 Hz with a 1280-d face stream (HSEmotion-sized, 30 Hz) and a 128-d VGGish-sized
stream (0.96 s hop, aligned by nearest row), plus valence/arousal labels. Then trains the
`transformer-lstm` head with its paper configuration (chunks of 250, 16 videos in parallel) for
one epoch through the shared trainer, with the background batch preparation on and off, and
prints a markdown table. Target: data wait < 5% of step time.

    .venv/bin/python bench/train.py                  # 50 x 3000 frames, device auto
    .venv/bin/python bench/train.py --videos 10 --frames 1000 --device cpu

Heads of issue 11 on a synthetic store the size of their real dataset (`--head trm`: CREMA-D,
7,442 clips; `--head temporal_attention`: RAER, 2,700 clips; `--head tpn_awm`: IEMOCAP, 7,400
utterances), with the paper's configuration. On a CPU a full epoch of these models takes long,
so `--steps N` trains the first N batches of the epoch through the shared trainer (prefetch on),
times the full validation pass, and reports seconds per epoch as steps-per-epoch x seconds per
step + validation seconds, beside the data-wait share measured over those steps:

    .venv/bin/python bench/train.py --head trm --steps 20 --device cpu --threads 2
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


# --- heads on stores the size of their real datasets --------------------------------------


def build_cremad_store(path: Path) -> tuple[Path, str]:
    """CREMA-D: 7,442 clips of about 2.5 s (63 video rows at 25 fps, Dasheng at 25 Hz) with the
    recipe's real widths (768 + 1280 + 768), float16 as extracted."""
    from pipelines.synthetic.feature_stores import cremad_like_store

    if not (path / "store.json").exists():
        cremad_like_store(path, 7442, frames=63, actors=91)
    return path, "7,442 clips x ~63 frames x (768 + 1280 + 768), float16"


def build_raer_store(path: Path) -> tuple[Path, str]:
    """RAER: 2,700 clips of about 48 frames (an assumption: the clip length is not published
    with the annotation lists), CLIP ViT-B/16 face and body 512-d per frame, float16."""
    from pipelines.synthetic.feature_stores import raer_like_store

    if not (path / "store.json").exists():
        raer_like_store(path, 2700, frames=48)
    return path, "2,700 clips x ~48 frames x (512 face + 512 body), float16"


def build_iemocap_store(path: Path) -> tuple[Path, str]:
    """IEMOCAP: 7,400 utterances of about 4.5 s: wav2vec2-base 768-d at 50 Hz and CLIP 512-d at
    the recipe's 2 fps, float16."""
    from pipelines.synthetic.feature_stores import iemocap_like_store

    if not (path / "store.json").exists():
        iemocap_like_store(path, 7400, seconds=4.5)
    return path, "7,400 utterances x ~4.5 s (768-d at 50 Hz + 512-d at 2 fps), float16"


SIZED = {"trm": build_cremad_store, "temporal_attention": build_raer_store,
         "tpn_awm": build_iemocap_store}


class _Timed:
    """Wraps a head: only the first `steps` batches of an epoch, timed build and validation."""

    def __init__(self, head, steps: int) -> None:
        self.head, self.steps = head, steps
        self.full_batches = 0
        self.build_s = self.eval_s = 0.0

    def build_data(self, store):
        t0 = time.perf_counter()
        data = self.head.build_data(store)
        self.build_s = time.perf_counter() - t0
        return data

    def train_batches(self, data, epoch, rng):
        import itertools

        batches = self.head.train_batches(data, epoch, rng)
        self.full_batches = len(batches)
        return itertools.islice(batches, self.steps)

    def evaluate(self, model, data, split):
        t0 = time.perf_counter()
        metrics = self.head.evaluate(model, data, split)
        self.eval_s = time.perf_counter() - t0
        return metrics

    def __getattr__(self, name):
        return getattr(self.head, name)


def bench_sized(head_name: str, store_path: Path | None, steps: int, overrides: list[str],
                device: torch.device, tmp: Path) -> None:
    t0 = time.perf_counter()
    path = store_path or tmp / f"{head_name}-bench.zarr"
    reused = (path / "store.json").exists()
    path, shape = SIZED[head_name](path)
    built = "reused" if reused else f"built in {time.perf_counter() - t0:.0f} s"
    cls = get_head(head_name)
    head = cls(apply_overrides(cls.config_cls(), ["epochs=1", *overrides]))
    timed = _Timed(head, steps)
    t0 = time.perf_counter()
    result = train(timed, str(path), tmp / "run", device=device, progress=False, prefetch=2)
    wall = time.perf_counter() - t0
    per_step = (result.data_wait_s + result.compute_s) / max(result.steps, 1)
    epoch_s = per_step * timed.full_batches + timed.eval_s
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n### Training loop: {head_name} on a synthetic {shape} store ({built}); paper "
          f"config, batch {head.config.batch_size}; device {gpu}, torch threads "
          f"{torch.get_num_threads()}\n")
    print("| steps timed | batches per epoch | s/step | data wait share | store -> RAM s "
          "| validation s | **s/epoch** (est.) | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {result.steps} | {timed.full_batches} | {per_step:.2f} | "
          f"{100 * result.data_wait_share:.2f}% | {timed.build_s:.1f} | {timed.eval_s:.1f} | "
          f"{epoch_s:.0f} | {wall:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=50)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--head", default="transformer-lstm")
    parser.add_argument("--store", default=None, help="Store path (default: a temp folder)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="Extra head config overrides key=value.")
    parser.add_argument("--steps", type=int, default=20,
                        help="Batches timed per epoch for the dataset-sized heads.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    if args.head in SIZED:
        try:
            bench_sized(args.head, Path(args.store) if args.store else None, args.steps,
                        args.overrides, device, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
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
