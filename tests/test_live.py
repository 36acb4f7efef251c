"""`affect live`: a trained head on a file, a network stream and a page, causally.

Story: a researcher trains a small trm run on the CREMA-D sample (random reduced encoders),
records a new clip and plays it to `affect live` as fast as possible: each frame's valence and
arousal equal what `affect predict --media` gives for that frame, because live computes the same
feature rows and carries the recursive state the same way, one frame at a time. Then the clip is
streamed over UDP by ffmpeg, and live stops by itself once the stream goes silent.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_predict_media_heads import affect, new_video

from pipelines.samples import generate_sample

# The run is trained once for the module (about a minute on 2 cores: extraction and training).
pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

SENTENCE = "Don't forget a jacket."


@pytest.fixture(scope="module")
def trm_run(tmp_path_factory) -> Path:
    """A one-epoch trm run on audio (REACT's per-frame VGGish, whose rows depend on their own
    samples only), video and text, with the corrections profile (`profile=fixed`: the state
    carried frame to frame, per_frame=true, and the rows in time order, sampling=clock)."""
    root = tmp_path_factory.mktemp("live")
    generate_sample("cremad", root / "data", seed=0, size=32, clips=12, seconds=0.8)
    affect("extract", "--dataset", "cremad", "--data-root", "data", "--store", "s.zarr",
           "--encoders", "vggish-react,hsemotion-enet-b0,embeddinggemma", "--weights", "random",
           "--reduced", "--device", "cpu", cwd=root)
    affect("train", "--head", "trm", "--store", "s.zarr", "--out", "run", "--device", "cpu",
           "--quiet", "--epochs", "1", "--set", "profile=fixed", "--set", "audio=vggish-react",
           "--set", "hidden=32", "--set", "heads=4", "--set", "batch_size=4", cwd=root)
    # the paper profile's rows are spread over the whole clip: a run live must refuse
    affect("train", "--head", "trm", "--store", "s.zarr", "--out", "paper", "--device", "cpu",
           "--quiet", "--epochs", "1", "--set", "audio=vggish-react", "--set", "hidden=32",
           "--set", "heads=4", "--set", "batch_size=4", cwd=root)
    (root / "new").mkdir(parents=True, exist_ok=True)
    new_video(root / "new" / "visitor.mp4")
    return root


def live_lines(root: Path, *args: str) -> list[dict]:
    from pipelines.live import live

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        live("run", *args[:1], **dict(args[1]) if len(args) > 1 else {}, out=out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_live_on_a_file_equals_predict_media_frame_by_frame(trm_run):
    root = trm_run
    (root / "visitor.jsonl").write_text(json.dumps(
        {"clip_id": "visitor", "video": "new/visitor.mp4", "text": SENTENCE}) + "\n")
    affect("predict", "--run", "run", "--media", "visitor.jsonl", "--out", "pred", "--device",
           "cpu", cwd=root)
    with open(root / "pred" / "clips" / "visitor.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = np.array([[float(r["valence"]), float(r["arousal"])] for r in rows])
    times = np.array([float(r["time_s"]) for r in rows])

    lines = live_lines(root, "new/visitor.mp4", {"text": SENTENCE})
    header, predictions, summary = lines[0], lines[1:-1], lines[-1]["summary"]
    assert header["head"] == "trm" and header["mode"] == "as fast as possible"
    assert header["stepping"] == "causal, state carried frame to frame"
    got = np.array([[p["valence"], p["arousal"]] for p in predictions])
    assert len(got) == len(expected) > 10
    # times are on the run's grid from the first frame, as predict's rows
    np.testing.assert_allclose([p["time_s"] for p in predictions], times, atol=1e-4)
    # the CSV holds six decimals: 5e-7 of rounding, well inside 1e-5
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert summary["frames"] == summary["predictions"] == len(expected)
    assert summary["drops"] == 0 and summary["end"] == "end of media"
    assert summary["latency_p50_ms"] > 0 and summary["latency_p95_ms"] >= \
        summary["latency_p50_ms"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_follows_a_udp_stream_and_stops_when_it_goes_silent(trm_run):
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the ffmpeg binary is not installed (.ci/run installs it)")
    root = trm_run
    url = f"udp://127.0.0.1:{free_udp_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "live", "--run", "run", "--source", url,
         "--idle-timeout", "4", "--text", SENTENCE, "--out", "live.jsonl"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = process.stderr.readline()
        assert ready.startswith("live: reading udp://"), ready + process.stderr.read()
        # the new clip twice over (4.4 s), paced as a camera would send it
        sender = subprocess.run(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "1",
             "-i", "new/visitor.mp4", "-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpegts",
             url + "?pkt_size=1316"], cwd=root, capture_output=True, text=True, timeout=60)
        assert sender.returncode == 0, sender.stderr
        stream_ended = time.monotonic()
        _, errors = process.communicate(timeout=60)
        stopped_after = time.monotonic() - stream_ended
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors[-2000:]
    lines = [json.loads(line) for line in (root / "live.jsonl").read_text().splitlines()]
    header, predictions, summary = lines[0], lines[1:-1], lines[-1]["summary"]
    assert header["mode"] == "live" and header["source"] == url
    assert len(predictions) > 10 and summary["predictions"] == len(predictions)
    assert all(np.isfinite([p["valence"], p["arousal"], p["latency_ms"]]).all()
               for p in predictions)
    assert summary["end"] == "idle timeout" and 3.5 < stopped_after < 30
    assert summary["latency_p50_ms"] > 0 and summary["latency_p95_ms"] >= \
        summary["latency_p50_ms"]
    # frames the model did not take were dropped (counted), never queued without bound
    assert summary["frames"] + summary["drops"] >= len(predictions)
    last = errors.strip().splitlines()[-1]
    assert last.startswith("live: ") and "real-time factor" in last and "dropped" in last


@pytest.mark.parametrize("args, words", [
    (("--run", "run", "--source", "missing.mp4"), ("missing.mp4", "no such file")),
    (("--run", "run", "--source", "new/visitor.mp4"), ("embeddinggemma", "--text")),
    (("--run", "run", "--source", "new/visitor.mp4", "--text", "Hi.", "--serve", "nowhere"),
     ("--serve", "HOST:PORT")),
    (("--run", "paper", "--source", "new/visitor.mp4", "--text", "Hi."),
     ("paper", "sampling=released", "profile=fixed")),
    (("--run", "run", "--source", "new/visitor.mp4", "--text", "Hi.", "--window", "2"),
     ("--window/--hop", "head trm runs frame by frame")),
])
def test_live_user_errors_are_one_line(trm_run, args, words):
    result = subprocess.run([sys.executable, "-m", "pipelines", "live", *args],
                            cwd=trm_run, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert all(w in lines[0] for w in words), lines
    assert result.stdout == ""


def test_ctrl_c_stops_live_cleanly_with_its_summary(trm_run):
    root = trm_run
    out = root / "interrupted.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "live", "--run", "run", "--source",
         "new/visitor.mp4", "--realtime", "--text", SENTENCE, "--out", str(out)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and len(out.read_text().splitlines()) >= 2):
            assert time.monotonic() < deadline and process.poll() is None, \
                process.stderr.read() if process.poll() is not None else "no prediction"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors[-2000:]
    summary = json.loads(out.read_text().splitlines()[-1])["summary"]
    assert summary["end"] == "interrupted" and summary["predictions"] >= 1
    assert errors.strip().splitlines()[-1].endswith("(interrupted)")
