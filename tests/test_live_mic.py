"""`affect live` with a microphone: a real ALSA capture device, fed from a file.

Story: a researcher watches a run live with a laptop's microphone (`--audio-source
alsa:default`). The CI machines have no sound card, but ALSA's `file` plugin turns a raw PCM file
into a capture device (`infile`), with the `null` plugin under it: FFmpeg's `alsa` input reads it
as it would read a microphone. That device is a hard one: it hands over one sample per read and
runs faster than real time. Its configuration is written in the test's folder and named by
ALSA_CONFIG_PATH, so nothing of the machine's own ALSA setup is read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from test_live import SENTENCE, trm_run  # noqa: F401 (trm_run: the module's run, a fixture)
from test_predict_media_heads import affect

from features_store.errors import UserError
from pipelines.live.source import (
    MIC_AHEAD_S,
    FrameQueue,
    Reader,
    open_source,
    parse_source,
)
from pipelines.synthetic.av_writer import write_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# PyAV's Linux wheels have FFmpeg's alsa input; its macOS wheels have none
needs_alsa = pytest.mark.skipif(not any("alsa" in f.split(",") for f in av.formats_available),
                                reason="this FFmpeg has no alsa input")
MIC_RATE = 24000  # live asks a microphone for its audio encoders' rate: REACT's VGGish reads 24 kHz
MIC_CHANNELS = 2  # FFmpeg's alsa input asks for two channels unless told otherwise


def write_microphone(folder: Path, samples: np.ndarray, more: str = "") -> dict[str, str]:
    """A capture device `testmic` that plays `samples` (mono, -1..1) as 16-bit stereo at
    MIC_RATE (the `file` plugin reads its raw file in whatever format the reader asks for), and
    `more` ALSA configuration; returns the environment that points ALSA at it and nothing else."""
    raw = folder / "mic.raw"
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    np.repeat(pcm, MIC_CHANNELS).tofile(raw)  # channels interleaved, as ALSA's raw format
    config = folder / "asound.conf"
    config.write_text("pcm.testmic {\n  type file\n  slave.pcm { type null }\n"
                      f'  file "/dev/null"\n  infile "{raw}"\n  format "raw"\n}}\n{more}')
    return {"ALSA_CONFIG_PATH": str(config)}


def speech_like(seconds: float) -> np.ndarray:
    """A voiced sound: a gliding pitch with its harmonics, in syllables of a quarter second."""
    t = np.arange(int(seconds * MIC_RATE)) / MIC_RATE
    phase = 2 * np.pi * np.cumsum(140 + 40 * np.sin(2 * np.pi * 0.7 * t)) / MIC_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return (0.3 * voice * syllables / np.abs(voice).max()).astype(np.float32)


@needs_alsa
def test_a_microphone_that_cannot_be_opened_is_one_line(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("ALSA_CONFIG_PATH", write_microphone(tmp_path, np.zeros(160))
                       ["ALSA_CONFIG_PATH"])
    monkeypatch.delenv("ALSA_CONFIG_DIR", raising=False)  # open_source sets it: undone after
    with pytest.raises(UserError) as error:
        open_source(parse_source("alsa:nosuchdevice"), 1.0, MIC_RATE)
    line = str(error.value)
    assert "\n" not in line and line.startswith("alsa:nosuchdevice: cannot open"), line
    assert "Unknown PCM nosuchdevice" in line  # ALSA's own reason, in the line
    assert capfd.readouterr().err == ""  # and not printed by libasound besides


@pytest.mark.parametrize("source", ["pulse:default", "avfoundation:0"])
def test_a_device_kind_this_ffmpeg_lacks_is_one_line(source):
    """PyAV's wheels build FFmpeg without a `pulse` input (and, on Linux, `avfoundation`):
    PulseAudio and PipeWire microphones open through ALSA's plugin instead."""
    kind = source.split(":")[0]
    if any(kind in f.split(",") for f in av.formats_available):
        pytest.skip(f"this FFmpeg has a {kind} input")
    with pytest.raises(UserError) as error:
        open_source(parse_source(source), 1.0, MIC_RATE)
    line = str(error.value)
    assert line.startswith(f"{source}: this FFmpeg has no {kind} input") and "\n" not in line
    assert "alsa:default" in line or kind != "pulse"


def test_a_camera_that_is_not_there_is_one_line():
    """FFmpeg lists v4l2 as `video4linux2,v4l2`: the camera's input is there, the device not."""
    with pytest.raises(UserError, match=r"^/dev/video99: cannot open \(No such file"):
        open_source(parse_source("/dev/video99"), 1.0)


@needs_alsa
@pytest.mark.skipif(not Path("/usr/share/alsa/alsa.conf").is_file(),
                    reason="ALSA's configuration is not installed (libasound2-data)")
def test_a_device_named_by_the_systems_alsa_configuration_opens():
    """PyAV's wheels carry their own libasound, built to read its configuration from
    /tmp/vendor/share/alsa: without the system's configuration no device name means anything
    (here `null`, which alsa.conf defines; `default` on a laptop)."""
    child = subprocess.run(
        [sys.executable, "-c", "from pipelines.live.source import open_source, parse_source\n"
         "container = open_source(parse_source('alsa:null'), 1.0, 16000)\n"
         "print(container.streams.audio[0].rate)"],
        env=alsa_free_environment(), capture_output=True, text=True, timeout=60)
    assert child.returncode == 0 and child.stdout.split() == ["16000"], child.stderr[-2000:]


def alsa_free_environment() -> dict[str, str]:
    """This process's environment without ALSA settings, for a child whose libasound is new."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ALSA_")}


@needs_alsa
def test_alsa_plugins_load_from_the_systems_folder_never_from_tmp(tmp_path):
    """A device of a plugin type (`pulse`, `pipewire` on a laptop) loads that plugin's code:
    from the system's plugin folder, not from the wheel builder's /tmp/vendor/lib/alsa-lib."""
    env = {**alsa_free_environment(), **write_microphone(
        tmp_path, np.zeros(160), "pcm.plugged { type nosuchplugin }\n")}
    child = subprocess.run(
        [sys.executable, "-c", "from pipelines.live.source import open_source, parse_source\n"
         "open_source(parse_source('alsa:plugged'), 1.0, 16000)"],
        env=env, capture_output=True, text=True, timeout=60)
    line = child.stderr.strip().splitlines()[-1]
    assert child.returncode == 1 and "alsa:plugged: cannot open" in line, child.stderr[-2000:]
    assert "libasound_module_pcm_nosuchplugin.so" in line and "/tmp/" not in line, line


@needs_alsa
def test_a_one_sample_microphone_keeps_to_the_video_clock(tmp_path, monkeypatch):
    """The device hands over one sample per read, five times faster than real time: its audio
    must reach the buffer whole (a 440 Hz tone stays 440 Hz at its level), and no further ahead
    of the video clock than MIC_AHEAD_S, or the audio of the frames being encoded is gone."""
    t = np.arange(4 * MIC_RATE) / MIC_RATE
    monkeypatch.setenv("ALSA_CONFIG_PATH", write_microphone(
        tmp_path, 0.5 * np.sin(2 * np.pi * 440 * t))["ALSA_CONFIG_PATH"])
    monkeypatch.delenv("ALSA_CONFIG_DIR", raising=False)
    video = tmp_path / "still.mp4"
    write_video(video, (np.full((16, 16, 3), 5 * k, np.uint8) for k in range(50)), fps=25)
    queue = FrameQueue(capacity=4, drop_oldest=True)
    reader = Reader(parse_source(str(video)), queue, fps=25.0, decode_size=None,
                    sample_rates=[MIC_RATE], audio_keep_s=3.0, idle_timeout_s=2.0,
                    realtime=True, audio_spec=parse_source("alsa:testmic"))
    buffer = reader.audio[MIC_RATE]
    ahead: list[tuple[float, float]] = []  # (frame time, how far the audio ran past the clock)
    started = time.perf_counter()
    reader.start()
    try:
        while not queue.finished:
            for frame in queue.take(4):
                media, wall = reader.clock  # the video clock: frame 1's time, its wall time
                ahead.append((frame.time_s, buffer.end_s - (media + time.perf_counter() - wall)))
        received_s, elapsed = buffer.received / MIC_RATE, time.perf_counter() - started
        start, samples = buffer.window(buffer.end_s - 1.0, buffer.end_s)
    finally:
        reader.close()
    assert reader.error is None and reader.stats.end_reason == "end of media"
    assert len(ahead) > 30
    settled = [a for time_s, a in ahead if time_s > 0.5]
    assert 0.0 <= min(settled) and max(settled) <= MIC_AHEAD_S + 0.05, settled
    # it kept pace with the video's two seconds, and sent no more than the wall time allows
    assert 2.0 - 0.1 < received_s < elapsed + MIC_AHEAD_S + 0.05, (received_s, elapsed)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak_hz = np.fft.rfftfreq(len(samples), 1 / MIC_RATE)[spectrum.argmax()]
    assert len(samples) == MIC_RATE and abs(peak_hz - 440) < 3, peak_hz
    np.testing.assert_allclose(np.sqrt(np.mean(samples ** 2)), 0.5 / np.sqrt(2), rtol=0.02)


@pytest.fixture(scope="module")
def reset_run(trm_run) -> Path:  # noqa: F811 (the fixture imported above)
    """A trm run whose state is reset at every frame (`per_frame=false`): each prediction then
    depends on its own frame's rows only, so two live runs can be compared frame by frame
    whatever frames each dropped."""
    affect("train", "--head", "trm", "--store", "s.zarr", "--out", "reset", "--device", "cpu",
           "--quiet", "--epochs", "1", "--set", "profile=fixed", "--set", "per_frame=false",
           "--set", "audio=vggish-react", "--set", "hidden=32", "--set", "heads=4",
           "--set", "batch_size=4", cwd=trm_run)
    return trm_run


def live_with_microphone(root: Path, folder: Path, samples: np.ndarray,
                         device: str = "alsa:testmic") -> tuple[subprocess.CompletedProcess,
                                                                list[dict]]:
    """`affect live` on the new clip at its own pace, its audio from the microphone."""
    folder.mkdir()
    out = folder / "live.jsonl"
    child = subprocess.run(
        [sys.executable, "-m", "pipelines", "live", "--run", "reset", "--source",
         "new/visitor.mp4", "--realtime", "--audio-source", device, "--text", SENTENCE,
         "--out", str(out)],
        cwd=root, env={**os.environ, **write_microphone(folder, samples)},
        capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return child, lines


@needs_alsa
@pytest.mark.slow
def test_live_hears_the_microphone(reset_run, tmp_path):
    seconds = 4.0  # longer than the 2.2 s clip: the device plays it at real time, held
    voice, voice_lines = live_with_microphone(reset_run, tmp_path / "voice",
                                              speech_like(seconds))
    muted, muted_lines = live_with_microphone(reset_run, tmp_path / "muted",
                                              np.zeros(int(seconds * MIC_RATE)))
    for child, lines in ((voice, voice_lines), (muted, muted_lines)):
        assert child.returncode == 0, child.stderr[-2000:]
        header, predictions, summary = lines[0], lines[1:-1], lines[-1]["summary"]
        assert header["audio_source"] == "alsa:testmic" and header["mode"] == "live"
        assert len(predictions) > 10 and summary["predictions"] == len(predictions)
        assert summary["end"] == "end of media"
        # the microphone sent as much audio as the wall time live ran (from the first frame to
        # the last prediction), up to MIC_AHEAD_S more: it kept pace and was held to the clock
        wall_s = summary["media_s"] / summary["realtime_factor"]
        assert wall_s - 0.3 < summary["audio_s"] < wall_s + MIC_AHEAD_S + 0.3, summary
        last = child.stderr.strip().splitlines()[-1]
        assert last.startswith("live: ") and last.endswith("(end of media)"), child.stderr
    # The same frame with the voice and with silence: only the audio rows differ, so a voice
    # that reached the encoders changes the prediction (the first frames may have had no audio)
    voiced = {p["time_s"]: (p["valence"], p["arousal"]) for p in voice_lines[1:-1]}
    silent = {p["time_s"]: (p["valence"], p["arousal"]) for p in muted_lines[1:-1]}
    both = sorted(t for t in voiced.keys() & silent.keys() if t > 0.3)
    assert len(both) >= 5, (sorted(voiced), sorted(silent))
    differ = [np.abs(np.subtract(voiced[t], silent[t])).max() > 1e-4 for t in both]
    assert np.mean(differ) > 0.9, list(zip(both, differ))


@needs_alsa
@pytest.mark.slow
def test_live_with_a_microphone_that_cannot_be_opened_says_one_line(reset_run, tmp_path):
    child, lines = live_with_microphone(reset_run, tmp_path / "none", np.zeros(160),
                                        device="alsa:nosuchdevice")
    # the line live says when it starts reading (a network source waits for data from here),
    # then the error in one line
    said = child.stderr.strip().splitlines()
    assert child.returncode == 2 and len(said) == 2, child.stderr[-2000:]
    assert said[0] == "live: reading new/visitor.mp4"
    assert said[1].startswith("error: alsa:nosuchdevice: cannot open") and lines == []
    assert child.stdout == ""
