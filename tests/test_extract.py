"""A researcher's story: generated clips -> `affect extract` -> features in the store.

Encoders are reduced architectures with random weights (no downloads); what is checked is the
runner: rows at the media's times, the failure ledger, resume after a kill, and that the store
holds exactly what the encoder computes on the decoded frames.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from extract.media import iter_video_frames, load_audio
from extract.runner import ExtractOptions, get_encoder, run_extraction
from features_store import open_store, verify
from pipelines.cli import cli
from pipelines.synthetic.av_writer import write_audio, write_frame_folder, write_video

VIDEO = "hsemotion-enet-b0"
AUDIO = "vggish"
TEXT = "minilm-l6"


def _frames(n: int, seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(size, size, 3))
    return np.stack([(base + 2 * k) % 255 for k in range(n)]).astype(np.uint8)


def _tone(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_video(root / "a25.mp4", _frames(50, 0), fps=25, audio=_tone(2.0, 220))
    write_video(root / "b2997.mp4", _frames(60, 1), fps=30000 / 1001, audio=_tone(2.0, 330))
    write_video(root / "silent.mp4", _frames(25, 2), fps=25)
    write_frame_folder(root / "folder", _frames(10, 3))
    write_audio(root / "speech.wav", _tone(1.5, 440), 16000)
    (root / "empty.mp4").write_bytes(b"")
    write_video(root / "whole.mkv", _frames(50, 4), fps=25)
    whole = (root / "whole.mkv").read_bytes()
    (root / "cut.mkv").write_bytes(whole[: len(whole) // 2])
    return root


def _options(**kw) -> ExtractOptions:
    base = dict(encoders=[VIDEO, AUDIO, TEXT], weights="random", reduced=True, device="cpu",
                batch_size=16, clips_per_part=2, decode_workers=2, dtype="float32")
    base.update(kw)
    return ExtractOptions(**base)


def test_rows_follow_the_media_timeline(media, tmp_path):
    clips = [
        {"clip_id": "a25", "video": str(media / "a25.mp4"), "text": "it is eleven",
         "split": "train"},
        {"clip_id": "b2997", "video": str(media / "b2997.mp4"), "text": "maybe", "split": "val"},
        {"clip_id": "folder", "frames": str(media / "folder"), "fps": 10},
        {"clip_id": "speech", "audio": str(media / "speech.wav"), "text": "hello", "start": 0.0,
         "end": 1.5},
    ]
    store = open_store(str(tmp_path / "s.zarr"))
    report = run_extraction(clips, store, _options(), progress=False)
    assert (report.done, report.failed) == (4, 0)
    video = store.resolve(VIDEO)
    assert video.frame_shift_s == pytest.approx(1 / 25)
    shapes = {c.clip_id: c for c in store.shape_manifest(VIDEO)}
    assert set(shapes) == {"a25", "b2997", "folder"}  # the wav-only clip has no video
    assert shapes["a25"].n_rows == 50                 # 2 s at 25 fps
    assert shapes["b2997"].n_rows == 51               # 60 frames at 29.97 fps = 2.002 s: 0..2.0
    assert shapes["folder"].n_rows == 25              # 10 frames at 10 fps = 1 s -> 25
    expected = [len(b) for b in iter_video_frames(media / "b2997.mp4", fps=25)]
    assert shapes["b2997"].n_rows == sum(expected)
    audio = {c.clip_id: c for c in store.shape_manifest(AUDIO)}
    assert set(audio) == {"a25", "b2997", "speech"}   # the folder has no audio
    assert audio["speech"].n_rows == int(1.5 // 0.96)
    text = {c.clip_id: c for c in store.shape_manifest(TEXT)}
    assert text["speech"].n_rows == 1 and text["speech"].t_end == 1.5
    assert store.resolve(TEXT).frame_shift_s is None
    assert verify(store).ok
    provenance = store.resolve(VIDEO)
    assert provenance.weights == "random" and provenance.extra["random_weights"]
    assert {r["clip_id"]: r["split"] for r in store.clips() if "split" in r}["b2997"] == "val"


def test_store_holds_what_the_encoder_computes(media, tmp_path):
    clip = {"clip_id": "a25", "video": str(media / "a25.mp4")}
    options = _options(encoders=[VIDEO, AUDIO])
    store = open_store(str(tmp_path / "p.zarr"))
    run_extraction([clip], store, options, progress=False)
    encoder = get_encoder(VIDEO, options, "cpu")
    frames = np.concatenate([b.frames for b in iter_video_frames(media / "a25.mp4", fps=25)])
    with torch.inference_mode():
        direct = encoder.encode_batch(encoder.preprocess(frames)).numpy()
    np.testing.assert_allclose(store.read_clip(VIDEO, "a25"), direct, rtol=1e-4, atol=1e-5)
    audio_encoder = get_encoder(AUDIO, options, "cpu")
    wav = load_audio(media / "a25.mp4", 16000)
    np.testing.assert_allclose(store.read_clip(AUDIO, "a25"), audio_encoder.encode_audio(wav),
                               rtol=1e-4, atol=1e-5)


def test_bad_clips_land_in_the_ledger_and_the_run_goes_on(media, tmp_path):
    clips = [
        {"clip_id": "good", "video": str(media / "a25.mp4")},
        {"clip_id": "empty", "video": str(media / "empty.mp4")},
        {"clip_id": "cut", "video": str(media / "cut.mkv")},
        {"clip_id": "missing", "video": str(media / "nope.mp4")},
        {"clip_id": "silent", "video": str(media / "silent.mp4")},
    ]
    store = open_store(str(tmp_path / "f.zarr"))
    report = run_extraction(clips, store, _options(encoders=[VIDEO, AUDIO]), progress=False)
    ledger = {f["clip_id"]: f for f in store.failures()}
    assert set(ledger) == {"empty", "cut", "missing", "silent"}
    assert ledger["empty"]["stage"] == "empty"
    assert ledger["missing"]["stage"] == "open"
    assert ledger["silent"]["stage"] == "no_audio"
    assert "cut.mkv" in ledger["cut"]["message"]
    assert (report.done, report.failed) == (1, 4)
    # Nothing of a failed stream is visible; the silent clip keeps its video rows.
    assert store.committed_clip_ids(VIDEO) == {"good", "silent"}
    assert store.committed_clip_ids(AUDIO) == {"good"}
    assert verify(store).ok


def test_cli_summary_exit_codes_and_resume(media, tmp_path):
    from click.testing import CliRunner

    clips_file = tmp_path / "clips.jsonl"
    lines = [{"clip_id": "good", "video": str(media / "a25.mp4")},
             {"clip_id": "empty", "video": str(media / "empty.mp4")}]
    clips_file.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    store = str(tmp_path / "c.zarr")
    args = ["extract", "--clips", str(clips_file), "--store", store, "--encoders", VIDEO,
            "--weights", "random", "--reduced", "--device", "cpu"]
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "1 done" in first.output and "1 failed" in first.output
    strict = runner.invoke(cli, [*args, "--strict"])
    assert strict.exit_code == 1                       # the empty clip still fails
    assert "1 skipped" in strict.output                # and the good one is not redone
    changed = runner.invoke(cli, [*args, "--fps", "10"])
    assert changed.exit_code == 0
    assert len(open_store(store, "r").streams()) == 2  # a changed setting is a new stream
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"clip_id": "x", "video": "a.mp4"}\n{"clip_id": \n')
    result = runner.invoke(cli, ["extract", "--clips", str(bad), "--store", store,
                                 "--encoders", VIDEO], standalone_mode=False)
    assert "bad.jsonl:2" in str(result.exception)


def test_extract_media_makes_clips_from_a_folder_without_a_clips_file(media, tmp_path):
    from click.testing import CliRunner

    tree = tmp_path / "my-videos"
    write_video(tree / "s01" / "take1.mp4", _frames(25, 5), fps=25)   # its audio is apart:
    write_audio(tree / "s01" / "take1.wav", _tone(1.0, 220), 16000)    # one clip, two files
    write_frame_folder(tree / "s02" / "faces", _frames(8, 6))
    write_video(tree / "intro.mp4", _frames(25, 7), fps=25, audio=_tone(1.0, 330))
    (tree / "notes.txt").write_text("not media")
    out = str(tmp_path / "feats.zarr")
    common = ["--encoders", f"{VIDEO},{AUDIO}", "--weights", "random", "--reduced",
              "--device", "cpu"]
    result = CliRunner().invoke(cli, ["extract", "--media", str(tree), "--out", out, *common])
    assert result.exit_code == 0, result.output
    assert "3 total, 3 done" in result.output and " 0 failed" in result.output, result.output
    store = open_store(out, "r")
    assert store.committed_clip_ids(VIDEO) == {"s01/take1", "s02/faces", "intro"}
    # The video's audio came from the .wav beside it; a frame folder has no audio to encode.
    assert store.committed_clip_ids(AUDIO) == {"s01/take1", "intro"}
    table = {c["clip_id"]: c for c in store.clips()}
    assert table["s01/take1"]["audio"] == str((tree / "s01" / "take1.wav").resolve())
    # A single file is a clip named after it.
    one = CliRunner().invoke(cli, ["extract", "--media", str(media / "a25.mp4"), "--out",
                                   str(tmp_path / "one.zarr"), *common])
    assert one.exit_code == 0, one.output
    assert open_store(str(tmp_path / "one.zarr"), "r").committed_clip_ids(AUDIO) == {"a25"}
    both = CliRunner().invoke(cli, ["extract", "--media", str(tree), "--clips", "x.jsonl",
                                    "--out", out, *common], standalone_mode=False)
    assert "give one of --clips, --media and --dataset" in str(both.exception)


def test_killed_run_resumes_to_the_same_store(media, tmp_path):
    clips = [{"clip_id": f"c{i}", "video": str(media / ("a25.mp4" if i % 2 else "b2997.mp4"))}
             for i in range(12)]
    clips_file = tmp_path / "clips.jsonl"
    clips_file.write_text("\n".join(json.dumps(c) for c in clips) + "\n")
    reference = open_store(str(tmp_path / "ref.zarr"))
    run_extraction(clips, reference, _options(encoders=[VIDEO], clips_per_part=1,
                                              dtype="float16"), progress=False)

    killed = str(tmp_path / "killed.zarr")
    cmd = [sys.executable, "-m", "pipelines", "extract", "--clips", str(clips_file), "--store",
           killed, "--encoders", VIDEO, "--weights", "random", "--reduced", "--device", "cpu",
           "--batch-size", "16", "--clips-per-part", "1", "--decode-workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    manifests = []
    while time.time() < deadline and proc.poll() is None:
        streams = os.path.join(killed, "streams")
        if os.path.isdir(streams):
            folders = [os.path.join(streams, k, "manifests") for k in os.listdir(streams)]
            # Only commit markers count: a manifest being written is still a temporary file.
            manifests = [m for f in folders if os.path.isdir(f) for m in os.listdir(f)
                         if m.endswith(".json")]
            if len(manifests) >= 3:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    partial = open_store(killed, "r")
    done_before = partial.committed_clip_ids(VIDEO)
    assert 3 <= len(done_before) < len(clips)
    report = verify(partial)
    # At most the orphan, and the stream is reported incomplete (the run's intent is recorded).
    assert all("without manifest" in p or "is incomplete" in p for p in report.problems)
    (missing,) = report.missing.values()
    assert 0 < len(missing) <= len(clips) - len(done_before)

    resumed = open_store(killed)
    again = run_extraction(clips, resumed, _options(encoders=[VIDEO], clips_per_part=1,
                                                    dtype="float16"), progress=False)
    assert again.skipped == len(done_before)                  # nothing extracted twice
    assert again.done == len(clips) - len(done_before)
    assert verify(resumed).ok                                 # the orphan is gone
    for clip in clips:
        np.testing.assert_array_equal(resumed.read_clip(VIDEO, clip["clip_id"]),
                                      reference.read_clip(VIDEO, clip["clip_id"]))


def test_decode_size_scales_once_for_all_encoders_and_is_a_new_stream(media, tmp_path):
    clip = {"clip_id": "a25", "video": str(media / "a25.mp4")}
    store = open_store(str(tmp_path / "d.zarr"))
    run_extraction([clip], store, _options(encoders=[VIDEO]), progress=False)
    run_extraction([clip], store, _options(encoders=[VIDEO], decode_size=32), progress=False)
    streams = store.streams()
    assert len(streams) == 2  # the decode size is part of the stream key
    scaled = next(s for s in streams if s.preprocessing.get("decode_shorter_side") == 32)
    encoder = get_encoder(VIDEO, _options(encoders=[VIDEO]), "cpu")
    frames = np.concatenate([b.frames for b in iter_video_frames(
        media / "a25.mp4", fps=25, size=32, resize_mode="shorter")])
    with torch.inference_mode():
        direct = encoder.encode_batch(encoder.preprocess(frames)).numpy()
    np.testing.assert_allclose(store.read_clip(scaled, "a25"), direct, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="decode-size cannot be combined"):
        run_extraction([clip], store, _options(encoders=[f"{VIDEO}@face"], decode_size=32),
                       progress=False)


def test_a_finished_rerun_is_answered_from_the_store_without_building_encoders(
        media, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import extract.encoders as encoders
    from extract.resume import already_done

    clips = [{"clip_id": f"c{i}", "video": str(media / "a25.mp4")} for i in range(3)]
    clips_file = tmp_path / "clips.jsonl"
    clips_file.write_text("\n".join(json.dumps(c) for c in clips) + "\n")
    weights = get_encoder(VIDEO, _options(encoders=[VIDEO]), "cpu").save_weights(
        tmp_path / "enet.safetensors")
    store = str(tmp_path / "w.zarr")
    args = ["extract", "--clips", str(clips_file), "--store", store, "--encoders", VIDEO,
            "--weights", str(weights), "--reduced", "--device", "cpu"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "3 done" in first.output, first.output

    def no_build(*a, **k):
        raise AssertionError("an encoder was built for a finished rerun")

    monkeypatch.setattr(encoders, "create_encoder", no_build)
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "3 skipped" in again.output
    # A new clip, or a weights file that changed, means real work: the encoders get built.
    options = _options(encoders=[VIDEO], weights=str(weights), dtype="float16",
                       batch_size=64)  # as the CLI (the batch size is part of the key)
    opened = open_store(store, "r")
    assert already_done(clips, opened, options) is not None
    more = [*clips, {"clip_id": "new", "video": str(media / "a25.mp4")}]
    assert already_done(more, opened, options) is None
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert already_done(clips, opened, options) is None
    assert already_done(clips, opened, _options(encoders=[VIDEO], dtype="float16")) is None


def test_a_frame_rate_written_as_25_or_25_0_is_one_stream():
    # A clips file or the Python API says 25, the CLI's default is 25.0: one value, one key.
    from extract.report import ExtractOptions
    from extract.resume import request_fingerprint

    keys = {request_fingerprint(VIDEO, ExtractOptions(encoders=[VIDEO], weights="random",
                                                      device="cpu", fps=fps))
            for fps in (25, 25.0)}
    assert len(keys) == 1 and None not in keys
