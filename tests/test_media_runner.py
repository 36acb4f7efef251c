"""What a user sees when clips go wrong during `affect extract`: no hang, no lost features.

A clips file from a script can hold anything (a list where a path should be, a video without
an audio track); a decoder can raise anything. Each case must end as a ledger line naming the
clip, the stream and the file, while the rest of the run goes on.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import extract.decode_ahead as decode_module
from extract.runner import ExtractOptions, run_extraction
from features_store import open_store, verify
from pipelines.synthetic.av_writer import write_video

VIDEO = "hsemotion-enet-b0"
AUDIO = "vggish"


def _frames(n: int, seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(size, size, 3))
    return np.stack([(base + 2 * k) % 255 for k in range(n)]).astype(np.uint8)


def _tone(seconds: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_video(root / "talk.mp4", _frames(25, 0), fps=25, audio=_tone(1.0))
    write_video(root / "silent.mp4", _frames(25, 1), fps=25)
    return root


def _options(**kw) -> ExtractOptions:
    base = dict(encoders=[VIDEO, AUDIO], weights="random", reduced=True, device="cpu",
                batch_size=16, clips_per_part=4, decode_workers=2, dtype="float32")
    base.update(kw)
    return ExtractOptions(**base)


@pytest.mark.timeout(120)
def test_a_clip_whose_video_is_a_list_is_a_ledger_line_not_a_hang(media, tmp_path):
    # Today the decode thread dies with a TypeError and the run waits for it forever.
    clips = [{"clip_id": "l", "video": ["x"]},
             {"clip_id": "good", "video": str(media / "talk.mp4")}]
    store = open_store(str(tmp_path / "s.zarr"))
    report = run_extraction(clips, store, _options(encoders=[VIDEO]), progress=False)
    assert (report.done, report.failed) == (1, 1)
    ledger = {f["clip_id"]: f for f in store.failures()}
    assert set(ledger) == {"l"}
    assert "TypeError" in ledger["l"]["message"]
    assert store.committed_clip_ids(VIDEO) == {"good"}
    assert verify(store).ok


@pytest.mark.timeout(120)
def test_an_unexpected_exception_inside_decoding_reaches_the_run(media, tmp_path, monkeypatch):
    real = decode_module.iter_video_frames

    def flaky(source, *args, **kwargs):
        if "boom" in str(source):
            raise RuntimeError("the decoder library broke")
        yield from real(source, *args, **kwargs)

    # Decoding lives in extract.decode_ahead (threads or worker processes); threads here.
    monkeypatch.setattr(decode_module, "iter_video_frames", flaky)
    (media / "boom.mp4").write_bytes((media / "talk.mp4").read_bytes())
    clips = [{"clip_id": "first", "video": str(media / "talk.mp4")},
             {"clip_id": "broken", "video": str(media / "boom.mp4")},
             {"clip_id": "last", "video": str(media / "talk.mp4")}]
    store = open_store(str(tmp_path / "s.zarr"))
    report = run_extraction(clips, store, _options(encoders=[VIDEO]), progress=False)
    assert (report.done, report.failed) == (2, 1)
    (entry,) = store.failures()
    assert entry["clip_id"] == "broken" and entry["stage"] == "decode"
    assert "RuntimeError: the decoder library broke" in entry["message"]
    assert "boom.mp4" in entry["message"]
    assert store.committed_clip_ids(VIDEO) == {"first", "last"}


@pytest.mark.timeout(120)
def test_a_video_without_audio_keeps_its_video_features(media, tmp_path):
    clips = [{"clip_id": "talk", "video": str(media / "talk.mp4")},
             {"clip_id": "silent", "video": str(media / "silent.mp4")}]
    store = open_store(str(tmp_path / "s.zarr"))
    report = run_extraction(clips, store, _options(), progress=False)
    # Only the stream that cannot be made fails: the silent clip's video rows are kept.
    assert store.committed_clip_ids(VIDEO) == {"talk", "silent"}
    assert store.committed_clip_ids(AUDIO) == {"talk"}
    (entry,) = store.failures()
    assert entry["clip_id"] == "silent" and entry["stage"] == "no_audio"
    assert entry["stream"] == store.resolve(AUDIO).alias
    assert "silent.mp4" in entry["message"]
    assert report.failed == 1 and report.failures[0]["stream"] == entry["stream"]
    assert store.read_clip(VIDEO, "silent").shape[0] == 25
    assert verify(store).ok
    # A rerun retries only what is missing and keeps what is there.
    again = run_extraction(clips, store, _options(), progress=False)
    assert again.skipped == 1 and again.failed == 1
    assert store.committed_clip_ids(VIDEO) == {"talk", "silent"}


@pytest.mark.timeout(240)
def test_ctrl_c_says_committed_parts_are_kept_and_a_rerun_resumes(media, tmp_path):
    clips = [{"clip_id": f"c{i}", "video": str(media / "talk.mp4")} for i in range(30)]
    clips_file = tmp_path / "clips.jsonl"
    clips_file.write_text("\n".join(json.dumps(c) for c in clips) + "\n")
    store = str(tmp_path / "s.zarr")
    cmd = [sys.executable, "-m", "pipelines", "extract", "--clips", str(clips_file), "--store",
           store, "--encoders", VIDEO, "--weights", "random", "--reduced", "--device", "cpu",
           "--clips-per-part", "1", "--decode-workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if len(glob.glob(os.path.join(store, "streams", "*", "manifests", "*.json"))) >= 2:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted:") and "kept" in last and "rerun" in last, err
    assert "Traceback" not in err
    kept = open_store(store, "r").committed_clip_ids(VIDEO)
    assert 2 <= len(kept) < len(clips)
    again = run_extraction(clips[:len(kept) + 1], open_store(store),
                           _options(encoders=[VIDEO], dtype="float16"),  # as the CLI
                           progress=False)
    assert (again.skipped, again.done) == (len(kept), 1)
