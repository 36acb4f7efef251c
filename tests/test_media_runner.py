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
import extract.runner as runner_module
from extract.runner import ExtractOptions, format_report, run_extraction
from features_store import open_store, verify
from features_store.errors import UserError
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
    # 5 fps keeps the model's share of these tests small: they are about the runner.
    base = dict(encoders=[VIDEO, AUDIO], weights="random", reduced=True, device="cpu",
                batch_size=16, clips_per_part=4, decode_workers=2, dtype="float32", fps=5)
    base.update(kw)
    return ExtractOptions(**base)


@pytest.mark.timeout(120)
def test_a_clip_whose_video_is_a_list_is_one_error_line_not_a_hang(media, tmp_path):
    # Once the decode thread died with a TypeError here and the run waited for it forever.
    clips = [{"clip_id": "good", "video": str(media / "talk.mp4")},
             {"clip_id": "l", "video": ["x"]}]
    store = open_store(str(tmp_path / "s.zarr"))
    with pytest.raises(UserError, match=r"clips\[1\]: clip 'l': 'video' must be a string"):
        run_extraction(clips, store, _options(encoders=[VIDEO]), progress=False)
    assert store.streams() == []  # refused before anything was written


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
    assert entry["stream"] == store.resolve(AUDIO).key
    assert entry["alias"] == store.resolve(AUDIO).alias
    assert "silent.mp4" in entry["message"]
    assert report.failed == 1 and report.failures[0]["stream"] == entry["stream"]
    # The stream that failed is accounted for by the ledger, so the store verifies clean.
    assert store.read_clip(VIDEO, "silent").shape[0] == 5  # 1 s at 5 fps
    assert verify(store).ok
    # A rerun retries only what is missing and keeps what is there.
    again = run_extraction(clips, store, _options(), progress=False)
    assert again.skipped == 1 and again.failed == 1
    assert store.committed_clip_ids(VIDEO) == {"talk", "silent"}


@pytest.mark.timeout(120)
def test_the_summary_tells_a_failed_stream_from_a_failed_clip(media, tmp_path):
    from click.testing import CliRunner

    from pipelines.cli import cli

    clips = [{"clip_id": "talk", "video": str(media / "talk.mp4")},
             {"clip_id": "silent", "video": str(media / "silent.mp4")},
             {"clip_id": "gone", "video": str(media / "gone.mp4")}]
    store = open_store(str(tmp_path / "s.zarr"))
    summary = format_report(run_extraction(clips, store, _options(), progress=False))
    first = summary.splitlines()[0]
    # One clip lost every stream, one lost its audio stream only and kept its video rows.
    assert first.startswith("clips: 3 total, 1 done, 0 skipped (already in the store), "
                            "1 failed, 1 partly extracted;"), summary
    assert "1 clip: 1 of 2 streams failed (its other stream is kept)" in summary, summary
    assert "1 clip: every stream failed" in summary, summary
    verified = CliRunner().invoke(cli, ["store", "verify", store.url])
    assert verified.exit_code == 0, verified.output
    # "ok", since the ledger accounts for them, but not silent about the failed clip-streams.
    assert "3 clip-streams failed (`affect store ledger" in verified.output, verified.output


@pytest.mark.timeout(120)
def test_ctrl_c_in_the_cli_says_what_is_kept(media, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    real_run = runner_module.TaskRunner.run
    calls = []

    def interrupted_on_the_third_task(self, task):
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return real_run(self, task)

    monkeypatch.setattr(runner_module.TaskRunner, "run", interrupted_on_the_third_task)
    clips = [{"clip_id": f"c{i}", "video": str(media / "talk.mp4")} for i in range(4)]
    clips_file = tmp_path / "clips.jsonl"
    clips_file.write_text("\n".join(json.dumps(c) for c in clips) + "\n")
    store = str(tmp_path / "s.zarr")
    with pytest.raises(SystemExit) as ended:
        main(["extract", "--clips", str(clips_file), "--store", store, "--encoders", VIDEO,
              "--weights", "random", "--reduced", "--device", "cpu", "--dtype", "float32",
              "--clips-per-part", "1", "--fps", "5"])
    assert ended.value.code == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("interrupted: the 2 clip(s) finished in this run"), last
    assert store in last and "rerun the same command to resume" in last
    assert open_store(store, "r").committed_clip_ids(VIDEO) == {"c0", "c1"}


# The CLI in a process of its own that receives SIGTERM (what SLURM and Kubernetes send) while
# its third task runs: the signal must end it as Ctrl-C does, not silently.
SIGTERMED_CLI = """
import os, signal, sys
import extract.runner as runner_module
from pipelines.cli import main
real_run = runner_module.TaskRunner.run
calls = []
def terminated_on_the_third_task(self, task):
    calls.append(task)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return real_run(self, task)
runner_module.TaskRunner.run = terminated_on_the_third_task
main(sys.argv[1:])
"""


@pytest.mark.timeout(120)
def test_sigterm_in_the_cli_is_handled_like_ctrl_c(media, tmp_path):
    clips = [{"clip_id": f"c{i}", "video": str(media / "talk.mp4")} for i in range(4)]
    clips_file = tmp_path / "clips.jsonl"
    clips_file.write_text("\n".join(json.dumps(c) for c in clips) + "\n")
    store = str(tmp_path / "s.zarr")
    ended = subprocess.run(
        [sys.executable, "-c", SIGTERMED_CLI, "extract", "--clips", str(clips_file), "--store",
         store, "--encoders", VIDEO, "--weights", "random", "--reduced", "--device", "cpu",
         "--dtype", "float32", "--clips-per-part", "1", "--fps", "5"],
        capture_output=True, text=True, timeout=110)
    assert ended.returncode == 128 + signal.SIGTERM, (ended.returncode, ended.stderr[-2000:])
    last = ended.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: the 2 clip(s) finished in this run"), ended.stderr
    assert store in last and "rerun the same command to resume" in last
    assert "Traceback" not in ended.stderr
    assert open_store(store, "r").committed_clip_ids(VIDEO) == {"c0", "c1"}


@pytest.mark.slow
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
                           _options(encoders=[VIDEO], dtype="float16", fps=25.0),  # as the CLI
                           progress=False)
    assert (again.skipped, again.done) == (len(kept), 1)


def _extract_cli(clips: list[dict], tmp_path, store: str, *extra: str,
                 env: dict | None = None) -> subprocess.CompletedProcess:
    clips_file = tmp_path / f"{os.path.basename(store)}.jsonl"
    clips_file.write_text("\n".join(json.dumps(c) for c in clips) + "\n")
    cmd = [sys.executable, "-m", "pipelines", "extract", "--clips", str(clips_file), "--store",
           store, "--weights", "random", "--reduced", "--device", "cpu", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
@pytest.mark.timeout(320)
def test_a_logged_run_names_clip_and_file_shows_progress_and_no_library_chatter(media,
                                                                               tmp_path):
    # stderr is a pipe here, as in a SLURM log or CI: no bar, so progress lines instead.
    clips = [{"clip_id": "talk", "video": str(media / "talk.mp4")},
             {"clip_id": "quiet-part", "video": str(media / "silent.mp4"), "start": 0.2}]
    done = _extract_cli(clips, tmp_path, str(tmp_path / "log.zarr"), "--encoders",
                        f"clip-vit-b16,{AUDIO}", env={"AFFECT_PROGRESS_EVERY": "0.5"})
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    # The failure is a line of its own that says which clip, which stream and which file.
    (failure,) = [line for line in err if "quiet-part" in line]
    assert failure.startswith("failed: clip 'quiet-part', stream vggish")
    assert "silent.mp4" in failure and "no audio" in failure
    assert any("failed: clip 'quiet-part'" in line for line in done.stdout.splitlines())
    # Progress lines come from a timer, so at least one shows while the models are built.
    progress = [line for line in err if line.startswith("extract: ")]
    assert progress and "/2 clips" in progress[-1]
    for chatter in ("No pretrained weights", "Writing model shards", "Loading weights",
                    "WARNING:root"):
        assert chatter not in done.stderr
    # --verbose brings the libraries' own lines back.
    loud = _extract_cli(clips[:1], tmp_path, str(tmp_path / "loud.zarr"), "--encoders",
                        "clip-vit-b16", "--verbose", "--progress-every", "1000")
    assert loud.returncode == 0, loud.stderr
    assert "No pretrained weights loaded" in loud.stderr
    # No tick within the interval: only the line that says where the run ended.
    ticks = [line for line in loud.stderr.splitlines() if line.startswith("extract: ")]
    assert len(ticks) == 1 and ticks[0].startswith("extract: 1/1 clips"), ticks


@pytest.fixture
def cli_console():
    """The CLI's stderr set-up, undone afterwards (it changes the process's logging)."""
    import logging

    from pipelines import console

    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    yield console
    console.configure(verbose=True)  # drops the quiet env switches it set
    root.handlers[:] = before[0]
    root.setLevel(before[1])
    logging.captureWarnings(False)


def test_failure_lines_go_above_the_bar_and_library_warnings_only_with_verbose(
        media, tmp_path, cli_console, capsys):
    import logging

    cli_console.configure(verbose=False)
    clips = [{"clip_id": "quiet-part", "video": str(media / "silent.mp4"), "start": 0.2}]
    run_extraction(clips, open_store(str(tmp_path / "s.zarr")), _options(encoders=[AUDIO]),
                   progress=True, progress_every_s=None)
    logging.getLogger("timm.models").warning("No pretrained weights exist for this model")
    logging.warning("No pretrained weights loaded for model 'ViT-B-16'")  # open_clip's way
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "quiet-part" in x]
    assert line.startswith("failed: clip 'quiet-part', stream vggish") and "silent.mp4" in line
    assert "No pretrained weights" not in err
    cli_console.configure(verbose=True)
    logging.warning("No pretrained weights loaded for model 'ViT-B-16'")
    assert "No pretrained weights loaded" in capsys.readouterr().err


def test_without_a_terminal_progress_lines_come_every_few_seconds(media, tmp_path, capsys):
    clips = [{"clip_id": f"c{i}", "video": str(media / "talk.mp4")} for i in range(3)]
    run_extraction(clips, open_store(str(tmp_path / "s.zarr")),
                   _options(encoders=[VIDEO], clips_per_part=1), progress=True,
                   progress_every_s=0.05)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("extract: ")]
    assert len(lines) >= 2  # stderr is captured, not a terminal: no bar, lines instead
    assert lines[-1].startswith("extract: 3/3 clips, 15 frames")
    assert "elapsed" in lines[-1]
