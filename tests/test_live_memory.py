"""The transformer family live: segment by segment, the very predictions of predict.

Story: a researcher has transformer-family runs on an Aff-Wild2-like store (paper profile and
the corrections profile) and wants to watch one live. Live hands the run its feature rows a few
frames at a time, as a camera delivers them; the stepper predicts each frame once its
`chunk`-frame segment is complete (the encoder attends over the whole segment), carries the
LSTM state or the memory from segment to segment, and predicts the last, shorter segment when
the source ends. Every frame's valence and arousal equal what the head's predict gives on the
whole clip, within 1e-5. fclstm-xl, which has no encoder, answers every frame as it arrives.

In-process on a synthetic store (seconds); `test_live.py`'s end-to-end story (a made video,
the encoders, `affect predict --media`) is in `test_live_memory_cli` below, marked slow.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from test_predict_media_heads import affect, new_video
from test_transformer_family import SMALL, ingest, write_affwild2_labels

from features_store import open_store
from heads.base import apply_overrides
from heads.data import load_frame_sequences
from heads.registry import get_head
from heads.trainer import load_run, predict_model, train
from pipelines.live.memory import SegmentStepper
from pipelines.live.steppers import STEPPERS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILY = ["transformer-lstm", "transformer-attention", "transformer", "fclstm-xl"]
CHUNK = 40  # frames per segment: the clips (250-450 frames) end in a shorter segment


@pytest.fixture(scope="module")
def va_store(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("live-memory")
    rng = np.random.default_rng(3)
    write_affwild2_labels(base / "raw", n_videos=6, rng=rng)  # 2 train, 4 validation videos
    ingest(base / "raw", base / "va.zarr", rng)
    return base / "va.zarr"


def trained(store: Path, name: str, profile: str) -> Path:
    """Two short epochs, so that the paper profile's per-target checkpoints can differ."""
    cls = get_head(name)
    config = apply_overrides(cls.config_cls(), [
        f"profile={profile}", *SMALL, "epochs=2", "constant_epochs=2", f"chunk={CHUNK}",
        "memory_pool=5", "memory_slots=3"])
    out = store.parent / f"{name}-{profile}"
    if not out.exists():
        train(cls(config), str(store), out, device="cpu", progress=False)
    return out


def clip_alone(run, store, clip_id: str):
    """(the clip's raw rows, predict's output on a split of that one clip): predict --media
    predicts one new clip alone, and the paper profile's batches (no key-padding mask) let a
    clip's last chunk see the padding of longer clips in its group."""
    config = run.head.config
    raw = load_frame_sequences(store, [clip_id], config.features, config.labels,
                               invalid_value=config.invalid_value)
    alone = dataclasses.replace(raw, features=raw.features.copy())
    if run.data.mean is not None:
        alone.normalize(run.data.mean, run.data.std)
    data = dataclasses.replace(run.data, store=store, splits={"alone": alone})
    return raw, predict_model(run.head, run.model, data, "alone")[clip_id]


def step_through(stepper, raw, rng: np.random.Generator):
    """Feed the clip's rows in batches of 1 to 37 frames. Returns every answer by its absolute
    frame, and for each frame the frames fed before and after the call that answered it."""
    n = len(raw.features)
    got = np.full((n, 2), np.nan)
    before, after = np.full(n, -1), np.full(n, -1)

    def take(answers, base: int, fed_before: int, fed_after: int) -> None:
        for index, values in answers:
            frame = base + index
            assert 0 <= frame < n and after[frame] < 0, (frame, "answered twice or outside")
            got[frame] = values
            before[frame], after[frame] = fed_before, fed_after

    start = 0
    while start < n:
        count = min(int(rng.integers(1, 38)), n - start)
        rows = {alias: raw.features[start : start + count, lo:hi]
                for alias, (lo, hi) in raw.feature_slices.items()}
        take(stepper(rows, count), start, start, start + count)
        start += count
    take(stepper.finish(), n, n, n)
    return got, before, after


@pytest.mark.parametrize("profile", ["paper", "fixed"])
@pytest.mark.parametrize("name", FAMILY)
def test_live_segments_equal_predict_on_the_whole_clip(va_store, name, profile):
    run = load_run(trained(va_store, name, profile), device="cpu")
    assert STEPPERS[name] is SegmentStepper
    store = open_store(str(va_store))
    rng = np.random.default_rng(0)
    for clip_id in store.clip_ids("val")[:2]:
        raw, expected = clip_alone(run, store, clip_id)
        stepper = SegmentStepper(run, np.dtype(np.float32))
        got, before, after = step_through(stepper, raw, rng)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        frames = np.arange(len(got))
        if name == "fclstm-xl":  # causal: each frame answered by the call that brought it
            assert "frame to frame" in stepper.describe()["stepping"]
            assert ((before <= frames) & (frames < after)).all()
            continue
        assert stepper.describe()["segment_frames"] == CHUNK
        segment_end = (frames // CHUNK + 1) * CHUNK
        full = segment_end <= len(got)
        # a full segment: answered by the call that brings its last frame, not before or after
        assert ((before[full] < segment_end[full]) & (segment_end[full] <= after[full])).all()
        # the last, shorter segment: only once the source has ended
        assert (~full).any() and (before[~full] == len(got)).all()


def test_a_run_with_per_target_checkpoints_steps_one_model_per_column(va_store):
    run = load_run(trained(va_store, "transformer-lstm", "paper"), device="cpu")
    assert set(run.head.checkpoints_used()) == {"valence", "arousal"}
    stepper = SegmentStepper(run, np.dtype(np.float32))
    assert len(stepper.models) == 2 and "own best checkpoint" in stepper.describe()["targets"]
    assert all(m is not run.model for m in stepper.models)  # the run's model is left as it is


# --- end to end: a made video through the encoders, `affect live` against `predict --media` --


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory) -> Path:
    """transformer-lstm and transformer-attention in both profiles on the Aff-Wild2 sample's
    HSEmotion frames and REACT's per-frame VGGish (whose rows depend on their own samples only,
    so live computes the very rows extraction does), random reduced encoders."""
    from pipelines.samples import generate_sample

    root = tmp_path_factory.mktemp("live-family")
    generate_sample("affwild2", root / "data", seed=0, size=32, clips=6, seconds=1.5)
    affect("extract", "--dataset", "affwild2", "--data-root", "data", "--store", "s.zarr",
           "--encoders", "hsemotion-enet-b0,vggish-react", "--weights", "random", "--reduced",
           "--device", "cpu", cwd=root)
    for name in ("transformer-lstm", "transformer-attention"):
        for profile in ("paper", "fixed"):
            affect("train", "--head", name, "--store", "s.zarr", "--out", f"{name}-{profile}",
                   "--device", "cpu", "--quiet", "--epochs", "1", "--set", f"profile={profile}",
                   "--set", "features=hsemotion-enet-b0,vggish-react", "--set", "chunk=24",
                   "--set", "d_model=32", "--set", "n_layers=1", "--set", "ffn=64",
                   "--set", "lstm_hidden=32", "--set", "regressor_hidden=32,32",
                   "--set", "batch_size=4", "--set", "memory_pool=5", cwd=root)
    (root / "new").mkdir(parents=True, exist_ok=True)
    new_video(root / "new" / "visitor.mp4")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["paper", "fixed"])
@pytest.mark.parametrize("name", ["transformer-lstm", "transformer-attention"])
def test_live_on_a_file_equals_predict_media_for_the_family(family_runs, name, profile):
    from pipelines.live import live

    root, run = family_runs, f"{name}-{profile}"
    affect("predict", "--run", run, "--media", "new/visitor.mp4", "--out", f"pred-{run}",
           "--device", "cpu", cwd=root)
    with open(root / f"pred-{run}" / "clips" / "visitor.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = np.array([[float(r["valence"]), float(r["arousal"])] for r in rows])
    times = np.array([float(r["time_s"]) for r in rows])

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        live(run, "new/visitor.mp4", out=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    header, predictions, summary = lines[0], lines[1:-1], lines[-1]["summary"]
    assert header["head"] == name and header["segment_frames"] == 24
    assert "segments of 24 frames" in header["stepping"]
    got = np.array([[p["valence"], p["arousal"]] for p in predictions])
    assert len(got) == len(expected) > 24 * 2 and len(expected) % 24  # a shorter last segment
    np.testing.assert_allclose([p["time_s"] for p in predictions], times, atol=1e-4)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)  # the CSV's 6 decimals
    assert summary["frames"] == summary["predictions"] == len(expected)
    assert summary["drops"] == 0 and summary["end"] == "end of media"
    # a segment's first frame waits for its last: the latency grows along a segment
    first, last = predictions[0]["latency_ms"], predictions[23]["latency_ms"]
    assert first >= last
