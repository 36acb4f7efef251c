"""The GPU path in one shot (issue 12): encoders, decoding and heads, one markdown table.

Run by `bench/gpu.sh` on a GPU machine (which installs the wheels of `bench/gpu_wheels.sh`
first); `--device cpu --tiny` runs the same measurements here with reduced models and small
clips, as a test does, so the script cannot rot between GPU sessions.

1. encoders, random weights (full size on GPU, reduced with --tiny), fp16 autocast on CUDA:
   model-only frames/s (the same preprocessed frames, already on the device: the ceiling) and
   end-to-end extraction frames/s (`run_extraction`, what `affect extract` runs: decode workers
   as processes, preprocessing, transfers, the store) on generated 256x256 and 1280x720 H.264
   clips; ratio model-only / end-to-end (target <= 1.1 for clip-vit-b16 at 256x256);
2. decode alone: frames/s with 1, 4, 8, 16 worker processes (1, 2 with --tiny), frames
   checked identical to a plain decode; torchcodec (CPU, and NVDEC on CUDA) when installed;
3. each head that has a synthetic store here: training steps/s through the shared trainer with
   its AMP setting, and the share of step time spent waiting for data (target < 5%);
4. live (`bench/live.py`): each head that runs live, a run of it (full sizes on GPU, reduced
   with --tiny) played to `affect live` on the device: frames/s as fast as possible and that
   over the run's grid rate, then paced from 25 and 30 fps clips: real-time factor, drops,
   latency.

    bench/gpu.sh --out gpu.md                       # on the GPU machine
    .venv/bin/python bench/gpu.py --device cpu --tiny --out /tmp/gpu.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import torch  # noqa: E402
from decode import decode_run, make_clips, reference_hashes  # noqa: E402


@dataclass
class Size:
    """How much work each measurement does: full (GPU) or tiny (CPU smoke run)."""

    reduced: bool
    small_clips: int
    small_side: int
    big_clips: int
    big_hw: tuple[int, int]
    seconds: float
    batch: int
    model_batches: int
    decode_workers: tuple[int, ...]
    e2e_workers: int
    audio_clips: int
    audio_seconds: float
    train_videos: int
    train_frames: int
    live_seconds: float


FULL = Size(reduced=False, small_clips=48, small_side=256, big_clips=12, big_hw=(720, 1280),
            seconds=8.0, batch=256, model_batches=20, decode_workers=(1, 4, 8, 16),
            e2e_workers=16, audio_clips=16, audio_seconds=30.0, train_videos=50,
            train_frames=3000, live_seconds=8.0)
TINY = Size(reduced=True, small_clips=2, small_side=64, big_clips=1, big_hw=(180, 320),
            seconds=1.0, batch=16, model_batches=2, decode_workers=(1, 2), e2e_workers=2,
            audio_clips=1, audio_seconds=2.0, train_videos=4, train_frames=120,
            live_seconds=4.5)  # longer than the longest default window (tpn_awm's 4 s)


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, *cells: object) -> None:
        self.rows.append(tuple(str(c) for c in cells))
        print("  " + " | ".join(self.rows[-1]), flush=True)

    def markdown(self) -> str:
        lines = ["| part | what | setting | value | ratio / share | target |",
                 "|---|---|---|---:|---:|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device: str):
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)


# --- 1. encoders: model-only ceiling against end-to-end extraction ----------------------------

def model_only_fps(encoder, frames: np.ndarray, size: Size, device: str) -> float:
    """Frames/s of the model alone on preprocessed frames already on the device."""
    x = encoder.preprocess(frames[: size.batch])
    while len(x) < size.batch:
        x = torch.cat([x, x])[: size.batch]
    x = x.to(device)
    with torch.inference_mode(), _autocast(device):
        encoder.encode_batch(x)  # warm-up (cuDNN/cuBLAS choices, lazy inits)
        _sync(device)
        started = time.perf_counter()
        for _ in range(size.model_batches):
            encoder.encode_batch(x)
        _sync(device)
    return size.model_batches * size.batch / (time.perf_counter() - started)


def model_only_audio_rows_s(encoder, seconds: float, device: str, repeats: int) -> float:
    wav = (0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000))).astype(
        np.float32)
    with torch.inference_mode(), _autocast(device):
        encoder.encode_audio(wav)
        _sync(device)
        started = time.perf_counter()
        rows = sum(len(encoder.encode_audio(wav)) for _ in range(repeats))
        _sync(device)
    return rows / (time.perf_counter() - started)


def e2e_fps(clips: list[dict], name: str, size: Size, device: str, tmp: str, tag: str,
            fps: float | None = 25.0) -> tuple[float, int]:
    from extract.report import ExtractOptions
    from extract.runner import run_extraction
    from features_store import open_store

    options = ExtractOptions(encoders=[name], weights="random", reduced=size.reduced,
                             device=device, batch_size=size.batch, fps=fps or 25.0,
                             decode_workers=size.e2e_workers, decode_in="processes",
                             clips_per_part=max(len(clips), 1))
    # Warm: builds the encoder (cached per process) and starts the decode forkserver.
    run_extraction(clips[:1], open_store(os.path.join(tmp, f"warm-{tag}.zarr")), options,
                   progress=False)
    store = open_store(os.path.join(tmp, f"e2e-{tag}.zarr"))
    started = time.perf_counter()
    report = run_extraction(clips, store, options, progress=False)
    seconds = time.perf_counter() - started
    rows = sum(s.rows for s in report.streams.values())
    if report.failed:
        raise RuntimeError(f"{name}: {report.failed} clips failed: {report.failures[:1]}")
    return rows / seconds, rows


def bench_encoders(table: Table, size: Size, device: str, tmp: str) -> None:
    from extract.encoders import create_encoder
    from extract.media import iter_video_frames

    side = size.small_side
    sets = {
        f"{side}x{side}": make_clips(os.path.join(tmp, "small"), size.small_clips, size.seconds,
                                     side, side),
        f"{size.big_hw[1]}x{size.big_hw[0]}": make_clips(os.path.join(tmp, "big"),
                                                        size.big_clips, size.seconds,
                                                        *size.big_hw),
    }
    kind = "reduced" if size.reduced else "full size"
    for name in ("clip-vit-b16", "swin-t"):
        encoder = create_encoder(name, weights="random", reduced=size.reduced, device=device)
        for label, clips in sets.items():
            frames = next(iter(iter_video_frames(clips[0]["video"], batch_size=size.batch)))
            ceiling = model_only_fps(encoder, frames.frames, size, device)
            end_to_end, rows = e2e_fps(clips, name, size, device, tmp, f"{name}-{label}")
            target = "<= 1.1" if name == "clip-vit-b16" and label.startswith(f"{side}x") else ""
            table.add("1 encoders", f"{name} ({kind}) model-only", label,
                      f"{ceiling:,.0f} frames/s", "", "")
            table.add("1 encoders", f"{name} end-to-end extract, {size.e2e_workers} decode "
                      "processes", f"{label}, {rows} frames", f"{end_to_end:,.0f} frames/s",
                      f"{ceiling / end_to_end:.2f}x model-only", target)
        del encoder
    clips = make_audio_clips(os.path.join(tmp, "audio"), size.audio_clips, size.audio_seconds)
    encoder = create_encoder("wav2vec2-base", weights="random", reduced=size.reduced,
                             device=device)
    ceiling = model_only_audio_rows_s(encoder, size.audio_seconds, device, 3)
    end_to_end, rows = e2e_fps(clips, "wav2vec2-base", size, device, tmp, "wav2vec2")
    table.add("1 encoders", f"wav2vec2-base ({kind}) model-only", f"{size.audio_seconds:g} s "
              "clips", f"{ceiling:,.0f} rows/s", "", "")
    table.add("1 encoders", "wav2vec2-base end-to-end extract", f"{rows} rows",
              f"{end_to_end:,.0f} rows/s", f"{ceiling / end_to_end:.2f}x model-only", "")


def make_audio_clips(folder: str, n: int, seconds: float) -> list[dict]:
    from pipelines.synthetic.av_writer import write_audio

    os.makedirs(folder, exist_ok=True)
    clips = []
    for i in range(n):
        path = os.path.join(folder, f"a{i:03d}.wav")
        if not os.path.exists(path):
            t = np.arange(int(seconds * 16000)) / 16000
            write_audio(path, (0.3 * np.sin(2 * np.pi * (180 + 15 * i) * t)).astype(np.float32),
                        16000)
        clips.append({"clip_id": f"a{i:03d}", "audio": path})
    return clips


# --- 2. decode alone ---------------------------------------------------------------------------

def bench_decode(table: Table, size: Size, device: str, tmp: str) -> None:
    side = size.small_side
    clips = make_clips(os.path.join(tmp, "small"), size.small_clips, size.seconds, side, side)
    reference = reference_hashes(clips)
    decode_run(clips[:1], 1, True)  # forkserver start outside the timing
    base = None
    for workers in size.decode_workers:
        seconds, frames, hashes = decode_run(clips, workers, True)
        fps = frames / seconds
        base = base or fps
        table.add("2 decode", "PyAV, worker processes", f"{workers} workers, {side}x{side}",
                  f"{fps:,.0f} frames/s", f"{fps / base:.2f}x 1 worker",
                  "identical" if hashes == reference else "FRAMES DIFFER")
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception as exc:  # noqa: BLE001 (any failure to load means: not measured)
        table.add("2 decode", "torchcodec", "-", "not measured", "",
                  f"not installed or no FFmpeg libraries: {str(exc).splitlines()[0][:80]}")
        return
    decoders = ["torchcodec"] + (["torchcodec:cuda"] if device.startswith("cuda") else [])
    for decoder in decoders:
        try:
            seconds, frames, hashes = decode_run(clips, 1, False, decoder)
        except Exception as exc:  # noqa: BLE001 (NVDEC may be missing from this FFmpeg)
            table.add("2 decode", decoder, "1 worker", "not measured", "",
                      str(exc).splitlines()[0][:100])
            continue
        table.add("2 decode", decoder, f"1 worker thread, {side}x{side}",
                  f"{frames / seconds:,.0f} frames/s",
                  f"{frames / seconds / base:.2f}x PyAV 1 process",
                  "identical" if hashes == reference else "frames differ (see note)")


# --- 3. heads ----------------------------------------------------------------------------------

def affwild2_store(path: Path, size: Size) -> Path:
    from train import build_store

    return build_store(path, size.train_videos, size.train_frames)


def react_store(path: Path, size: Size) -> Path:
    """Speaker/listener pairs with Swin-T- and VGGish-sized features and 25 reaction labels."""
    from features_store import StreamInfo, open_store

    store = open_store(str(path), mode="a", dataset="react")
    rng = np.random.default_rng(0)
    frames = size.train_frames
    infos = {
        "video": store.create_stream(StreamInfo(name="swin-t", dim=768, frame_shift_s=0.04)),
        "audio": store.create_stream(StreamInfo(name="vggish-react", dim=128,
                                                frame_shift_s=0.04)),
        "labels": store.create_stream(StreamInfo(name="react-emotion", kind="label", dim=25,
                                                 frame_shift_s=0.04)),
    }
    records, writers = [], {k: store.part_writer(v, "p0") for k, v in infos.items()}
    for split, dyads in (("train", max(2, size.train_videos // 2)), ("val", 2)):
        speakers = [f"NoXI/{split}-{d}/P1/1" for d in range(dyads)]
        listeners = [f"NoXI/{split}-{d}/P2/1" for d in range(dyads)]
        for clip in speakers + listeners:
            writers["video"].write_clip(clip, rng.standard_normal((frames, 768), np.float32))
            writers["audio"].write_clip(clip, rng.standard_normal((frames, 128), np.float32))
            writers["labels"].write_clip(clip, rng.uniform(0, 1, (frames, 25)).astype(
                np.float32))
            records.append({"clip_id": clip, "split": split, "speaker": clip})
        n = 2 * dyads
        matrix = np.eye(n, dtype=bool) | np.roll(np.eye(n, dtype=bool), 1, axis=1)
        store.put_aux(f"react/neighbours/{split}", matrix,
                      {"clip_ids": speakers + listeners, "listener_ids": listeners + speakers})
    for writer in writers.values():
        writer.commit()
    store.add_clips(records)
    store.finalize()
    return path


# The issue-11 heads' stores: real feature widths at full size (a few hundred clips: one epoch
# fits the script's minutes), narrow ones and a reduced CLIP text tower when tiny.
def cremad_store(path: Path, size: Size) -> Path:
    from pipelines.synthetic.feature_stores import cremad_like_store

    clips, actors = (24, 10) if size.reduced else (640, 91)
    dims = {"dasheng-base": 16, "hsemotion-enet-b0": 24, "embeddinggemma": 8} \
        if size.reduced else None
    return Path(cremad_like_store(path, clips, frames=63, actors=actors, dims=dims))


def raer_store(path: Path, size: Size) -> Path:
    from pipelines.synthetic.feature_stores import raer_like_store

    return Path(raer_like_store(path, 30 if size.reduced else 640, frames=48,
                                reduced=size.reduced))


def iemocap_store(path: Path, size: Size) -> Path:
    from pipelines.synthetic.feature_stores import iemocap_like_store

    if size.reduced:
        return Path(iemocap_like_store(path, 30, seconds=1.0, audio_dim=16, video_dim=12))
    return Path(iemocap_like_store(path, 640, seconds=4.5))


STORES = {"affwild2": affwild2_store, "react": react_store, "cremad": cremad_store,
          "raer": raer_store, "iemocap": iemocap_store}
HEAD_SETTINGS = {  # paper configs on GPU; one short epoch either way
    "affwild2": {"full": ["features=hsemotion-enet-b0,vggish", "epochs=1"],
                 "tiny": ["features=hsemotion-enet-b0,vggish", "epochs=1", "d_model=32",
                          "chunk=30", "batch_size=4"]},
    "react": {"full": ["epochs=1", "iterations_per_epoch=50"],
              "tiny": ["epochs=1", "iterations_per_epoch=3", "batch_size=4", "window=10",
                       "stride=5", "clip_frames=40", "model_dim=16", "n_samples=2"]},
    "cremad": {"full": ["epochs=1"],
               "tiny": ["epochs=1", "hidden=32", "heads=4", "batch_size=4"]},
    "raer": {"full": ["epochs=1"], "tiny": ["epochs=1", "batch_size=4"]},
    "iemocap": {"full": ["epochs=1"], "tiny": ["epochs=1", "shared_dim=16", "batch_size=4"]},
}


def bench_heads(table: Table, size: Size, device: str, tmp: str) -> None:
    from heads.base import apply_overrides
    from heads.registry import get_head, list_heads
    from heads.trainer import train

    stores: dict[str, Path] = {}
    for name in list_heads():
        cls = get_head(name)
        dataset = cls.default_dataset
        if dataset not in STORES:
            table.add("3 heads", name, "-", "not measured", "",
                      f"no synthetic {dataset} store in bench/gpu.py yet")
            continue
        if dataset not in stores:
            stores[dataset] = STORES[dataset](Path(tmp) / f"{dataset}.zarr", size)
        sets = HEAD_SETTINGS[dataset]["tiny" if size.reduced else "full"]
        try:
            head = cls(apply_overrides(cls.config_cls(), sets))
            result = train(head, str(stores[dataset]), Path(tmp) / f"run-{name}", device=device,
                           progress=False, stop_after=None)
        except Exception as exc:  # noqa: BLE001 (one head failing must not hide the others)
            table.add("3 heads", name, "-", "FAILED", "", f"{type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:100]}")
            traceback.print_exc()
            continue
        busy = result.data_wait_s + result.compute_s
        amp = head.config.amp if device.startswith("cuda") else "off"
        table.add("3 heads", f"{name} training", f"AMP {amp}, {result.steps} steps",
                  f"{result.steps / busy if busy else 0:.1f} steps/s",
                  f"{100 * result.data_wait_share:.1f}% data wait", "< 5%")


# --- 4. live ----------------------------------------------------------------------------------

def bench_live(table: Table, size: Size, device: str, tmp: str) -> None:
    """bench/live.py's measurement of every live head, on `device`, as table rows."""
    import live

    kind = "reduced" if size.reduced else "full size"
    for head in live.live_heads():
        try:
            row = live.measure_head(Path(tmp) / "live", head, not size.reduced, device,
                                    size.live_seconds)
        except Exception as exc:  # noqa: BLE001 (one head failing must not hide the others)
            table.add("4 live", head, "-", "FAILED", "", f"{type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:100] if str(exc) else ''}")
            traceback.print_exc()
            continue
        table.add("4 live", f"{head} ({kind}) as fast as possible",
                  f"{size.live_seconds:g} s clip, {row['grid_fps']:g} fps grid",
                  f"{row['frames_per_s']} frames/s", f"{row['rtf_fast']}x real time",
                  ">= 1")
        for fps in (25, 30):
            paced = row[f"paced_{fps}"]
            p50, p95 = paced["latency_p50_ms"], paced["latency_p95_ms"]
            table.add("4 live", f"{head} ({kind}) paced", f"{fps} fps camera",
                      f"rtf {paced['realtime_factor']:.2f}",
                      f"{paced['drops']} dropped of {paced['frames'] + paced['drops']}, "
                      f"latency p50 {_ms(p50)} / p95 {_ms(p95)}", "rtf 1.00, 0 dropped")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="reduced models, small clips (CPU)")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--only", default="1,2,3,4")
    parser.add_argument("--tmp", default=None)
    args = parser.parse_args(argv)
    size = TINY if args.tiny else FULL
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA device visible (use --device cpu --tiny)")
    if not args.device.startswith("cuda"):
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    tmp = args.tmp or tempfile.mkdtemp(prefix="affect-gpu-")
    machine = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
               else "cpu")
    header = (f"machine: {machine}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
              f"{'tiny (reduced models)' if args.tiny else 'full-size models'}, random weights")
    print(header, flush=True)
    table = Table()
    parts = {"1": bench_encoders, "2": bench_decode, "3": bench_heads, "4": bench_live}
    started = time.perf_counter()
    try:
        for key in args.only.split(","):
            t0 = time.perf_counter()
            parts[key](table, size, args.device, tmp)
            print(f"  (part {key}: {time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    text = f"{header}; {time.perf_counter() - started:.0f} s in all\n\n{table.markdown()}\n"
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
