"""`affect live` for the heads that read a whole window: temporal_attention, tpn_awm, regnn.

Story: a researcher trains each windowed head on its dataset's generated sample (the recipe's
encoders, random reduced weights), then plays a new clip to `affect live` as fast as possible.
Every output names its window (start and end time); the header line says the window and hop.
Each window's prediction equals `affect predict` on a clip made of that window's rows: here the
rows `affect predict --media` extracted for the whole clip, cut into the same windows and written
as clips of a store, predicted through the head's `predict_data` and `predict` as
`affect predict --split` does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict_media_heads import CASES, affect, new_video

from pipelines.live.windowed import SlidingWindow, window_clip_id
from pipelines.samples import generate_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the sliding window itself (fast) ----------------------------------------------------------

def test_windows_complete_every_hop_across_batches_of_any_size():
    shift = 0.04
    rows = np.arange(23, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    times = np.arange(23) * shift
    # audio rows at twice the frame rate, starting with the frames
    audio_times = np.arange(46) * shift / 2
    audio = np.arange(46, dtype=np.float32)[:, None]
    window = SlidingWindow(size=5, hop=3, shift=shift)
    got = []
    for start, end in ((0, 2), (2, 9), (9, 10), (10, 23)):  # uneven batches
        inside = (audio_times >= times[start] - 1e-9) & (audio_times < times[end - 1] + shift
                                                         - 1e-9)
        for w in window.push({"v": rows[start:end]}, times[start:end],
                             {"a": (audio_times[inside], audio[inside])}):
            got.append((start + w.last, w))
    # windows end at frames 5, 8, 11, ... (1-based): frames [0, 5), [3, 8), ..., [18, 23)
    assert [last for last, _ in got] == [4, 7, 10, 13, 16, 19, 22]
    for last, w in got:
        first = last - 4
        np.testing.assert_array_equal(w.rows["v"][:, 0], np.arange(first, last + 1))
        assert w.start_s == pytest.approx(first * shift)
        assert w.end_s == pytest.approx((last + 1) * shift)
        row_times, values = w.native["a"]  # the audio rows inside [start, end): 2 per frame
        np.testing.assert_array_equal(values[:, 0], np.arange(2 * first, 2 * last + 2))
        np.testing.assert_allclose(row_times, audio_times[2 * first: 2 * last + 2])
    # nothing a later window cannot reach is kept (the next ends at frame 25: from frame 21)
    np.testing.assert_array_equal(window.places, [21, 22])
    assert len(window.native["a"][0]) == 4


def test_a_live_source_that_drops_frames_keeps_windows_of_their_seconds():
    """Windows are places of the frame grid, not frames taken: frames that were dropped leave
    a window with fewer frames, of the same span; a window whose frames all went is skipped."""
    shift = 0.04
    window = SlidingWindow(size=4, hop=2, shift=shift)
    arrived = [0, 1, 2, 5, 6, 7, 14, 15, 16]  # 3-4 dropped, 8-13 dropped
    got = window.push({"v": np.array(arrived, np.float32)[:, None]},
                      np.array(arrived) * shift)
    spans = [(round(w.start_s / shift), round(w.end_s / shift)) for w in got]
    frames = [w.rows["v"][:, 0].tolist() for w in got]
    # due at places 3, 5, 7, 9, ...: frame 5 completes 3 (dropped) and 5; frame 14 completes
    # 9 (frames 6, 7), 11 and 13 hold nothing that arrived; frame 15 completes 15
    assert spans == [(0, 4), (2, 6), (4, 8), (6, 10), (12, 16)]
    assert frames == [[0, 1, 2], [2, 5], [5, 6, 7], [6, 7], [14, 15]]
    assert [w.last for w in got] == [3, 3, 5, 6, 7]  # the frame of the batch that completed it
    np.testing.assert_allclose(got[1].times, [2 * shift, 5 * shift])


def test_a_window_of_one_frame_each_frame_and_per_utterance_rows():
    window = SlidingWindow(size=1, hop=1, shift=0.5)
    out = window.push({"text": np.ones((1, 3), np.float32), "v": np.eye(3, dtype=np.float32)},
                      np.array([0.0, 0.5, 1.0]))
    assert [w.last for w in out] == [0, 1, 2]
    assert all(w.rows["text"].shape == (1, 3) for w in out)  # a sentence's row, every frame
    np.testing.assert_array_equal(out[2].rows["v"], [[0, 0, 1]])
    with pytest.raises(ValueError):
        SlidingWindow(size=0, hop=1, shift=0.04)


def test_native_audio_rows_are_the_spans_rows_or_silence_where_there_is_no_audio():
    from extract.report import ExtractOptions
    from extract.runner import build_plans
    from pipelines.live.features import native_audio_rows
    from pipelines.live.source import AudioBuffer

    plan = build_plans(ExtractOptions(encoders=["vggish-react"], weights="random", reduced=True,
                                      device="cpu", dtype="float32"), "cpu")[0]
    rate, shift = plan.encoder.spec.sample_rate, plan.info.frame_shift_s
    buffer = AudioBuffer(rate, keep_s=5.0)
    empty_times, empty = native_audio_rows(plan, (0.0, 0.5), buffer, None, 1.0, 0.05)
    assert not empty.any() and len(empty) == np.ceil(0.5 / shift)  # no audio yet: silence
    t = np.arange(rate) / rate  # one second of a tone
    buffer.append(0.0, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32))
    times, rows = native_audio_rows(plan, (0.2, 0.6), buffer, None, 1.0, 0.05)
    whole = plan.encoder.encode_audio(buffer.window(0.0, 1.0)[1])  # extraction's rows
    first = round(0.2 / shift)
    np.testing.assert_allclose(times, np.arange(first, round(0.6 / shift)) * shift)
    np.testing.assert_allclose(rows, whole[first: first + len(rows)], rtol=1e-5, atol=1e-5)
    after_times, after = native_audio_rows(plan, (2.0, 2.5), buffer, None, 1.0, 0.05)
    assert not after.any() and after_times[0] == pytest.approx(2.0)  # the track has ended


# --- each adapter against the head's predict on a store of the same windows (fast) -------------

def store_of_windows(url: str, streams: dict[str, tuple[np.ndarray, float]],
                     spans: list[tuple[float, float]], labels: dict[str, int]) -> str:
    """A store whose clips are windows of one clip: for each stream (alias -> (rows from time 0,
    seconds per row)) the rows whose times lie in each window's span, one split per window
    (`window-K`), named as live names them; empty label streams (alias -> dim)."""
    from features_store import StreamInfo, open_store

    store = open_store(url)
    store.add_clips({"clip_id": window_clip_id(start), "split": f"window-{k}"}
                    for k, (start, _) in enumerate(spans))
    for alias, dim in labels.items():
        store.create_stream(StreamInfo(name=alias, kind="label", dim=dim, frame_shift_s=0.04))
    for alias, (rows, shift) in streams.items():
        info = store.create_stream(StreamInfo(name=alias, dim=rows.shape[1], frame_shift_s=shift))
        times = np.arange(len(rows)) * shift
        with store.part_writer(info, "p0") as writer:
            for start, end in spans:
                inside = (times >= start - 1e-6) & (times < end - 1e-6)
                writer.write_clip(window_clip_id(start), rows[inside], t0=start)
    store.finalize()
    return url


def live_against_predict(tmp_path, stepper, head, model, frame_rows: dict[str, np.ndarray],
                         native_rows: dict[str, tuple[np.ndarray, float]], fps: float,
                         labels: dict[str, int]) -> int:
    """Feed the stepper the clip's rows in uneven batches, as live does; every output equals
    the head's `predict_data` + `predict` on the same window as a clip of a store. Returns the
    number of windows."""
    from types import SimpleNamespace

    from heads.trainer import predict_model

    shift = 1.0 / fps
    frames = len(next(iter(frame_rows.values())))
    outputs = []
    edges = [0, 3, 4, 11, frames]
    for start, end in zip(edges[:-1], edges[1:]):
        batch = [SimpleNamespace(time_s=k * shift) for k in range(start, end)]
        span = (start * shift, end * shift)
        native = {}
        for alias, (rows, row_shift) in native_rows.items():
            times = np.arange(len(rows)) * row_shift
            inside = (times >= span[0] - 1e-6) & (times < span[1] - 1e-6)
            native[alias] = (times[inside], rows[inside])
        outputs += stepper.step(batch, {a: v[start:end] for a, v in frame_rows.items()}, native)
    spans = sorted({(o[2]["window_start_s"], o[2]["window_end_s"]) for o in outputs})
    streams = {a: (v, shift) for a, v in frame_rows.items()} | native_rows
    store = store_of_windows(str(tmp_path / "windows.zarr"), streams, spans, labels)
    from features_store import open_store

    windows = open_store(store)
    for k, (start, _) in enumerate(spans):
        data = head.predict_data(stepper.run.data, windows, f"window-{k}")
        predictions = predict_model(head, model, data, f"window-{k}")
        (table,) = head.prediction_tables(predictions, data, f"window-{k}").values()
        got = np.array([values for _, values, fields in outputs
                        if fields["window_start_s"] == round(start, 6)])
        assert list(table.columns) == list(stepper.columns)
        np.testing.assert_allclose(got, table.values, atol=1e-5, rtol=0)
    return len(spans)


def test_regnn_windows_equal_its_predict_on_the_same_windows(tmp_path):
    from test_regnn import tiny_config, toy_react_store

    from heads.regnn.head import RegnnHead
    from pipelines.live.windowed import RegnnWindows

    store = toy_react_store(str(tmp_path / "react.zarr"), {"train": 2}, frames=60)
    head = RegnnHead(tiny_config(n_samples=2))
    data = head.build_data(store)
    torch.manual_seed(0)
    model = head.build_model(data).eval()
    from types import SimpleNamespace

    stepper = RegnnWindows(SimpleNamespace(head=head, model=model, data=data), np.float32)
    stepper.set_window(0.6, 0.2, fps=25.0)  # 15 frames (REGNN's 10 and 5 inside), every 5
    rng = np.random.default_rng(3)
    rows = {"swin-t": rng.standard_normal((40, 8)).astype(np.float32),
            "vggish-react": rng.standard_normal((40, 4)).astype(np.float32)}
    windows = live_against_predict(tmp_path, stepper, head, model, rows, {}, 25.0,
                                   {"react-emotion": 25})
    assert windows == (40 - 15) // 5 + 1


def test_tpn_awm_windows_equal_its_predict_on_the_same_windows(tmp_path):
    from types import SimpleNamespace

    from heads.tpn_awm.config import TpnAwmConfig
    from heads.tpn_awm.head import TpnAwmHead, UtteranceData
    from pipelines.live.windowed import TpnAwmWindows

    head = TpnAwmHead(TpnAwmConfig(shared_dim=16, label_stream="iemocap-class"))
    rng = np.random.default_rng(4)
    norm = {"audio": (rng.standard_normal(6).astype(np.float32), np.full(6, 2.0, np.float32)),
            "video": (rng.standard_normal(5).astype(np.float32), np.full(5, 0.5, np.float32))}
    data = UtteranceData(splits={}, classes=["hap", "sad", "neu", "ang"], audio_dim=6,
                         video_dim=5, norm=norm)
    torch.manual_seed(0)
    model = head.build_model(data).eval()
    stepper = TpnAwmWindows(SimpleNamespace(head=head, model=model, data=data), np.float32)
    stepper.set_window(4.0, 1.0, fps=2.0)  # 8 frames of the 2 fps grid, every 2
    video = rng.standard_normal((20, 5)).astype(np.float32)
    audio = rng.standard_normal((250, 6)).astype(np.float32)  # 25 rows a second
    windows = live_against_predict(tmp_path, stepper, head, model, {"clip-vit-b16": video},
                                   {"wav2vec2-base": (audio, 0.04)}, 2.0, {})
    assert windows == (20 - 8) // 2 + 1


def test_temporal_attention_windows_equal_its_predict_on_the_same_windows(tmp_path):
    from types import SimpleNamespace

    from heads.temporal_attention.config import TemporalAttentionConfig
    from heads.temporal_attention.head import SegmentData, TemporalAttentionHead
    from pipelines.live.windowed import TemporalAttentionWindows

    head = TemporalAttentionHead(TemporalAttentionConfig(
        face_stream="face", body_stream="body", label_stream="raer-class", mlp_dim=64))
    # the random reduced CLIP a `--weights random --reduced` extraction records
    source = {"model": "ViT-B-16", "reduced": True, "quick_gelu": True, "embed_dim": None,
              "random": True, "seed": 0, "weights": "random", "sha256": None, "stream": "face"}
    data = SegmentData(face=np.zeros((0, 512), np.float16), body=np.zeros((0, 512), np.float16),
                       splits={}, classes=["Neutrality", "Enjoyment", "Confusion", "Fatigue",
                                           "Distraction"], dim=512, source=source)
    torch.manual_seed(0)
    model = head.build_model(data).eval()
    stepper = TemporalAttentionWindows(SimpleNamespace(head=head, model=model, data=data),
                                       np.float16)
    stepper.set_window(0.8, 0.4, fps=25.0)  # 20 frames (16 segments of them), every 10
    rng = np.random.default_rng(5)
    # rows as a float16 stream holds them
    rows = {name: rng.standard_normal((45, 512)).astype(np.float16).astype(np.float32)
            for name in ("face", "body")}
    windows = live_against_predict(tmp_path, stepper, head, model, rows, {}, 25.0,
                                   {"raer-class": 1})
    assert windows == (45 - 20) // 10 + 1


@pytest.mark.parametrize("flag, value", [("--hop", "0"), ("--window", "-1")])
def test_a_window_or_hop_that_is_not_positive_is_one_line(tmp_path, flag, value):
    result = subprocess.run([sys.executable, "-m", "pipelines", "live", "--run", "run",
                             "--source", "clip.mp4", flag, value], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"{flag} {int(value)}: must be a positive number of seconds" in lines[0], lines
    assert result.stdout == ""


# --- each windowed head, trained, live on a new clip against predict (slow) --------------------

WINDOWED = {c.head: c for c in CASES if c.head in ("temporal_attention", "regnn")}
# tpn_awm reads its audio at the stream's own rate: REACT's per-frame VGGish, whose rows depend
# on their own samples only, so live's rolling encoding gives the extracted rows (wav2vec2's
# transformer sees the whole clip in extraction and only recent audio live)
WINDOWED["tpn_awm"] = dataclasses.replace(
    next(c for c in CASES if c.head == "tpn_awm"), encoders="vggish-react,clip-vit-b16",
    sets=("shared_dim=16", "batch_size=4", "audio_stream=vggish-react"))
# (window, hop) in seconds on the 2.2 s clip: several windows that overlap, and tpn_awm's 2 fps
# grid (IEMOCAP's recipe) gives windows of 2 frames
LIVE_WINDOWS = {"temporal_attention": (0.8, 0.4), "tpn_awm": (1.0, 0.5), "regnn": (1.2, 0.6)}


@pytest.fixture(scope="module", params=sorted(WINDOWED))
def windowed_run(request, tmp_path_factory) -> tuple[str, Path]:
    """A one-epoch run of the head (its predict-media case), the new clip predicted whole."""
    case = WINDOWED[request.param]
    root = tmp_path_factory.mktemp(case.head)
    generate_sample(case.dataset, root / "data", seed=0, size=32, **case.sample)
    affect("extract", "--dataset", case.dataset, "--data-root", "data", "--store", "s.zarr",
           "--encoders", case.encoders, "--weights", "random", "--reduced", "--device", "cpu",
           cwd=root)
    affect("train", "--head", case.head, "--store", "s.zarr", "--out", "run", "--device", "cpu",
           "--quiet", "--epochs", "1", *(a for s in case.sets for a in ("--set", s)), cwd=root)
    new_video(root / "new" / "visitor.mp4")
    affect("predict", "--run", "run", "--media", "new/visitor.mp4", "--out", "pred",
           "--device", "cpu", cwd=root)
    return case.head, root


def live_lines(root: Path, source: str, **options) -> list[dict]:
    from pipelines.live import live

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        live("run", source, out=out, device="cpu", **options)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def windows_store(root: Path, starts: list[float], window_s: float) -> str:
    """A store whose clips are the windows of the clip `predict --media` extracted: each
    stream's rows whose times lie in [start, start + window) (as live cuts its windows),
    named as live names them; the label streams empty, as in the scratch store."""
    from features_store import open_store

    whole = open_store(str(root / "pred" / "store.zarr"))
    url = str(root / "windows.zarr")
    store = open_store(url)
    streams = whole.streams()
    # a split per window: each predicted alone, as live predicts it (in tpn_awm's paper
    # profile an utterance's prediction depends on the padding its batch adds)
    clips = [{"clip_id": window_clip_id(s), "split": f"window-{k}"} for k, s in enumerate(starts)]
    store.add_clips(clips)
    for info in streams:
        store.create_stream(info)
        if info.kind != "feature":
            continue
        array = whole.load_stream(info, ["visitor"])
        rows = np.asarray(array.clip("visitor"))
        t0 = float(array.t0[0])
        times = t0 + np.arange(len(rows)) * info.frame_shift_s
        with store.part_writer(info, "windows") as writer:
            for clip, start in zip(clips, starts):
                inside = (times >= start - 1e-6) & (times < start + window_s - 1e-6)
                writer.write_clip(clip["clip_id"], rows[inside], t0=start)
    store.finalize()
    return url


@pytest.mark.slow
def test_live_windows_equal_predict_on_the_same_windows(windowed_run):
    from features_store import open_store
    from heads.trainer import load_run, predict_model

    head, root = windowed_run
    window_s, hop_s = LIVE_WINDOWS[head]
    lines = live_lines(root, "new/visitor.mp4", window_s=window_s, hop_s=hop_s)
    header, outputs, summary = lines[0], lines[1:-1], lines[-1]["summary"]
    fps = header["fps"]
    assert header["head"] == head and header["stepping"] == "sliding window"
    assert header["window_frames"] == round(window_s * fps)
    assert header["hop_frames"] == round(hop_s * fps)
    assert header["window_s"] == pytest.approx(header["window_frames"] / fps)
    starts = sorted({o["window_start_s"] for o in outputs})
    assert len(starts) >= 2
    for o in outputs:
        assert o["window_end_s"] == pytest.approx(o["window_start_s"] + header["window_s"],
                                                  abs=1e-4)
    assert np.diff(starts) == pytest.approx(header["hop_s"], abs=1e-4)
    assert summary["drops"] == 0 and summary["predictions"] == len(outputs)

    # predict on the same windows, as clips of a store (affect predict --split's path)
    run = load_run(root / "run", device="cpu")
    windows = open_store(windows_store(root, starts, header["window_s"]))
    columns = header["columns"]
    for k, start in enumerate(starts):
        data = run.head.predict_data(run.data, windows, f"window-{k}")
        predictions = predict_model(run.head, run.model, data, f"window-{k}")
        tables = run.head.prediction_tables(predictions, data, f"window-{k}")
        table = tables[window_clip_id(start)]
        assert columns == list(table.columns)
        got = [o for o in outputs if o["window_start_s"] == start]
        values = np.array([[o[c] for c in columns] for o in got])
        if table.kind == "classes":  # one output per window: its class probabilities
            assert len(got) == 1
            assert values.sum() == pytest.approx(1.0, abs=1e-4)
        else:  # REGNN: every frame of the window, every generated reaction
            assert [o["sample"] for o in got] == table.sample.tolist()
            np.testing.assert_allclose([o["time_s"] - start for o in got], table.time_s,
                                       atol=1e-4)
        np.testing.assert_allclose(values, table.values, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_a_window_longer_than_the_media_is_one_line(windowed_run):
    head, root = windowed_run
    result = subprocess.run([sys.executable, "-m", "pipelines", "live", "--run", "run",
                             "--source", "new/visitor.mp4", "--window", "10"], cwd=root,
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "new/visitor.mp4: --window 10 s (250 frames at 25 fps) is longer than the media " \
        "(2.200 s)" in lines[0] or head == "tpn_awm", lines
    assert "--window 10 s" in lines[0] and "longer than the media (2.2" in lines[0], lines
    assert result.stdout == ""
