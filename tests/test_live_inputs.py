"""What live reads: sources told apart (files, network URLs, FFmpeg devices), and audio rows.

Live audio rows against extracted ones: a rolling window of the buffered audio, cut on the
encoder's hop grid, gives the rows extraction writes for the whole clip (for an encoder whose
rows depend only on their own samples, REACT's per-frame VGGish), put on the frames' times by
the store's alignment rule."""

from __future__ import annotations

import numpy as np
import pytest

from extract.media_audio import iter_timed_audio
from extract.report import ExtractOptions
from extract.runner import build_plans
from features_store.align import to_timeline
from heads.data import auto_method
from pipelines.live.features import audio_rows
from pipelines.live.source import AudioBuffer
from pipelines.synthetic.av_writer import write_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_live_audio_rows_equal_the_extracted_rows_on_the_frames(tmp_path):
    video = tmp_path / "tone.mp4"
    seconds, fps = 2.0, 25.0
    t = np.arange(int(seconds * 24000)) / 24000
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)
    write_video(video, (np.full((32, 32, 3), 40 * (k % 5), np.uint8) for k in range(50)),
                fps=25, audio=chirp, sample_rate=24000)
    plan = build_plans(ExtractOptions(encoders=["vggish-react"], weights="random", reduced=True,
                                      device="cpu", dtype="float32"), "cpu")[0]
    rate = plan.encoder.spec.sample_rate
    chunks = list(iter_timed_audio(video, rate, chunk_s=plan.encoder.spec.chunk_s or 30.0))
    t0 = chunks[0][0]
    whole = np.concatenate([plan.encoder.encode_audio(s) for _, s in chunks])  # extraction
    shift = 1.0 / fps
    frame_times = t0 + np.arange(int(seconds * fps) - 2) * shift
    expected, _ = to_timeline(whole, t0, plan.info.frame_shift_s, frame_times, shift,
                              auto_method(plan.info.frame_shift_s, shift))

    buffer = AudioBuffer(rate, keep_s=3.0)
    buffer.append(t0, np.concatenate([s for _, s in chunks]))
    got = np.concatenate([
        audio_rows(plan, frame_times[i : i + 3], shift, buffer, None, window_s=0.3,
                   lookahead_s=0.05) for i in range(0, len(frame_times), 3)])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # without the look-ahead the last frame of each batch lacks the end of its window
    short = audio_rows(plan, frame_times[:3], shift, buffer, None, window_s=0.3,
                       lookahead_s=0.0)
    assert not np.allclose(short, expected[:3], rtol=1e-5, atol=1e-5)


def test_sources_are_read_as_files_streams_or_devices(tmp_path):
    import sys

    from features_store.errors import UserError
    from pipelines.live.source import SourceSpec, parse_source

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    assert parse_source(str(clip)) == SourceSpec(str(clip), None, live=False)
    assert parse_source("udp://127.0.0.1:5000") == SourceSpec("udp://127.0.0.1:5000", None, True)
    assert parse_source("rtsp://cam.local/stream").live
    assert parse_source("/dev/video2") == SourceSpec("/dev/video2", "v4l2", live=True)
    assert parse_source("alsa:hw:1") == SourceSpec("hw:1", "alsa", live=True)
    assert parse_source("pulse:default") == SourceSpec("default", "pulse", live=True)
    camera = parse_source("camera")
    assert camera.live and camera.format == ("avfoundation" if sys.platform == "darwin"
                                             else "v4l2")
    with pytest.raises(UserError, match="nothere.mp4: no such file"):
        parse_source(str(tmp_path / "nothere.mp4"))


def test_a_separate_microphone_beside_a_file_read_as_fast_as_possible_is_one_line(tmp_path):
    # The microphone is put on the video clock by the wall clock; a file read faster than its
    # own pace would pair each frame with audio from the wrong moment, so it is refused before
    # anything loads, and --realtime is named as the way.
    from features_store.errors import UserError
    from pipelines.live import live

    clip, voice = tmp_path / "clip.mp4", tmp_path / "voice.wav"
    clip.write_bytes(b"x")
    voice.write_bytes(b"x")
    with pytest.raises(UserError, match=r"clip\.mp4: --audio-source .*--realtime") as error:
        live(str(tmp_path / "no-run"), str(clip), audio_source=str(voice))
    assert "\n" not in str(error.value)
