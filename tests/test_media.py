"""Decoding the media a dataset ships: video files, frame folders, audio, and broken files.

Every file here is generated with PyAV (`pipelines.synthetic.av_writer`), and what the decoder
reports is checked against what the container itself says (``stream.frames``, ``pts *
time_base``). Frames are flat gray images whose level encodes their index, so after lossy
compression we can still tell which source frame was emitted.
"""

from __future__ import annotations

import gc
import math
import pickle
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import psutil
import pytest

from extract.media import (
    FrameBatch,
    MediaError,
    count_frames,
    iter_audio,
    iter_video_frames,
    load_audio,
    probe,
)
from features_store.errors import UserError
from pipelines.synthetic.av_writer import write_audio, write_frame_folder, write_video

H, W = 48, 64
SR = 16000
LEVEL_STEP = 7  # gray level of frame i is 10 + 7 * i (mod 230): survives H.264 at any preset


def level_of(i: int) -> int:
    return 10 + (LEVEL_STEP * i) % 230


def gray_frames(n: int, h: int = H, w: int = W):
    for i in range(n):
        yield np.full((h, w, 3), level_of(i), dtype=np.uint8)


def frame_ids(frames: np.ndarray) -> list[int]:
    """Recover the source index of each emitted frame from its gray level (for n < 33)."""
    levels = frames.reshape(len(frames), -1).mean(axis=1)
    return [int(round((lv - 10) / LEVEL_STEP)) for lv in levels]


def tone(seconds: float, sr: int = SR, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def container_pts(path: Path) -> list[float]:
    """Presentation times as the container reports them, read with plain PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [float(f.pts * f.time_base) for f in container.decode(stream)]


def decode_all(source, **kwargs) -> FrameBatch:
    batches = list(iter_video_frames(source, **kwargs))
    return FrameBatch(np.concatenate([b.frames for b in batches]),
                      np.concatenate([b.times_s for b in batches]),
                      np.concatenate([b.source_times_s for b in batches]),
                      np.concatenate([b.source_index for b in batches]))


# Irregular gaps between 10 ms and 150 ms: a phone recording with dropped frames.
VFR_PTS = [0.0, 0.04, 0.05, 0.2, 0.24, 0.25, 0.4, 0.55, 0.56, 0.6, 0.7, 0.72]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    files = {
        "25fps": root / "clip25.mp4",
        "ntsc": root / "clip2997.mp4",
        "30fps": root / "clip30.mkv",
        "vfr_mp4": root / "vfr.mp4",
        "vfr_mkv": root / "vfr.mkv",
        "avi": root / "clip.avi",
        "flv": root / "clip.flv",
        "wav": root / "speech.wav",
        "stereo": root / "stereo.wav",
    }
    write_video(files["25fps"], gray_frames(25), fps=25, audio=tone(1.0))
    write_video(files["ntsc"], gray_frames(30), fps=Fraction(30000, 1001))
    write_video(files["30fps"], gray_frames(30), fps=30)
    write_video(files["vfr_mp4"], gray_frames(len(VFR_PTS)), fps=25, pts_s=VFR_PTS)
    write_video(files["vfr_mkv"], gray_frames(len(VFR_PTS)), fps=25, pts_s=VFR_PTS)
    write_video(files["avi"], gray_frames(20), fps=25, codec="mpeg4")
    write_video(files["flv"], gray_frames(20), fps=25)
    write_audio(files["wav"], tone(2.0), SR)
    left = tone(1.5)
    write_audio(files["stereo"], np.stack([left, -0.5 * left], axis=1), SR)
    return files


# --- video files --------------------------------------------------------------------------


@pytest.mark.parametrize("key, n, rate", [("25fps", 25, Fraction(25)),
                                          ("ntsc", 30, Fraction(30000, 1001)),
                                          ("30fps", 30, Fraction(30))])
def test_constant_rate_videos_keep_every_frame_at_the_container_time(media, key, n, rate):
    path = media[key]
    info = probe(path)
    assert info.has_video and (info.width, info.height) == (W, H)
    assert info.fps == pytest.approx(float(rate))
    reference = container_pts(path)
    assert len(reference) == n
    if info.n_frames is not None:  # MP4 declares its count; Matroska does not
        assert info.n_frames == n

    clip = decode_all(path, batch_size=7)
    assert clip.frames.shape == (n, H, W, 3) and clip.frames.dtype == np.uint8
    np.testing.assert_allclose(clip.times_s, reference, atol=1e-9)
    np.testing.assert_allclose(clip.times_s, np.arange(n) / float(rate), atol=1e-3)
    assert frame_ids(clip.frames) == list(range(n))
    assert list(clip.source_index) == list(range(n))


def test_ntsc_times_are_exact_multiples_of_1001_over_30000(media):
    clip = decode_all(media["ntsc"])
    np.testing.assert_allclose(clip.times_s, np.arange(30) * 1001 / 30000, atol=1e-9)


@pytest.mark.parametrize("key", ["vfr_mp4", "vfr_mkv"])
def test_variable_frame_rate_keeps_the_stored_timestamps(media, key):
    reference = container_pts(media[key])
    # Matroska stores milliseconds, MP4 whatever time base the muxer picked.
    np.testing.assert_allclose(reference, VFR_PTS, atol=1e-3)
    clip = decode_all(media[key])
    np.testing.assert_allclose(clip.times_s, reference, atol=1e-9)
    assert frame_ids(clip.frames) == list(range(len(VFR_PTS)))


@pytest.mark.parametrize("key", ["vfr_mp4", "vfr_mkv"])
def test_variable_frame_rate_resampled_shows_the_frame_on_screen(media, key):
    reference = np.asarray(container_pts(media[key]))
    clip = decode_all(media[key], fps=20)
    # Grid: every 50 ms from the first frame, until the last frame's end.
    assert clip.times_s[0] == pytest.approx(reference[0])
    np.testing.assert_allclose(np.diff(clip.times_s), 0.05, atol=1e-9)
    for t, shown, src_t in zip(clip.times_s, frame_ids(clip.frames), clip.source_times_s):
        expected = int(np.searchsorted(reference, t + 1e-6, side="right") - 1)
        assert shown == expected, f"at {t:.3f} s"
        assert src_t == pytest.approx(reference[expected])
    # The last frame (0.72 s) lasts as long as the media says, ~40 ms at the nominal 25 fps.
    assert clip.times_s[-1] == pytest.approx(0.75, abs=1e-6)


def test_resampling_30_to_25_fps_gives_25_frames_at_25_fps_times(media):
    clip = decode_all(media["30fps"], fps=25)
    assert len(clip.frames) == 25
    np.testing.assert_allclose(clip.times_s, np.arange(25) / 25, atol=1e-9)
    # Frame on screen at k/25 s is the 30 fps frame floor(k * 30 / 25).
    expected = [math.floor(k * 30 / 25 + 1e-9) for k in range(25)]
    assert frame_ids(clip.frames) == expected
    assert list(clip.source_index) == expected


def test_upsampling_repeats_frames_and_covers_the_clip(media):
    clip = decode_all(media["25fps"], fps=50)
    assert len(clip.frames) == 50
    assert frame_ids(clip.frames) == [k // 2 for k in range(50)]


@pytest.mark.parametrize("key, n", [("avi", 20), ("flv", 20)])
def test_other_containers_decode_with_their_own_timestamps(media, key, n):
    reference = container_pts(media[key])
    clip = decode_all(media[key])
    assert len(clip.frames) == len(reference) == count_frames(media[key]) == n
    np.testing.assert_allclose(clip.times_s, reference, atol=1e-9)
    resampled = decode_all(media[key], fps=10)
    # 20 frames at 25 fps last 0.8 s: 8 grid points at 10 fps, from the first frame's time.
    assert len(resampled.frames) == 8
    np.testing.assert_allclose(resampled.times_s, reference[0] + np.arange(8) / 10, atol=1e-9)


def test_time_range_of_a_long_video(media):
    clip = decode_all(media["30fps"], fps=10, start_s=0.3, end_s=0.65)
    np.testing.assert_allclose(clip.times_s, [0.3, 0.4, 0.5, 0.6], atol=1e-9)
    assert frame_ids(clip.frames) == [9, 12, 15, 18]
    every = decode_all(media["30fps"], start_s=0.5, end_s=0.6)
    assert frame_ids(every.frames) == [15, 16, 17]
    assert list(every.source_index) == [-1, -1, -1]  # after a seek the index is unknowable
    # Matroska keeps milliseconds: the times are the container's, not k / 30.
    np.testing.assert_allclose(every.times_s, container_pts(media["30fps"])[15:18], atol=1e-9)


def test_a_range_past_the_end_is_empty(media):
    with pytest.raises(MediaError) as err:
        list(iter_video_frames(media["30fps"], start_s=5.0, end_s=6.0))
    assert err.value.stage == "empty"


# --- crops and resizing ------------------------------------------------------------------------


def textured(n: int = 5):
    """Frames with a horizontal ramp, so a crop shows where it was taken."""
    ramp = np.tile(np.linspace(0, 255, W, dtype=np.float32), (H, 1))
    for i in range(n):
        yield np.repeat((ramp * (0.5 + 0.1 * i))[..., None], 3, axis=2).clip(0, 255).astype(
            np.uint8)


def test_clip_box_with_margin_is_clamped_to_the_image(tmp_path):
    folder = tmp_path / "frames"
    write_frame_folder(folder, textured())
    full = decode_all(folder)
    clip = decode_all(folder, boxes=[10, 5, 30, 25], box_margin=4)
    assert clip.frames.shape == (5, 28, 28, 3)
    np.testing.assert_array_equal(clip.frames, full.frames[:, 1:29, 6:34])
    edge = decode_all(folder, boxes=[50, 40, 70, 60], box_margin=2)
    assert edge.frames.shape == (5, H - 38, W - 48, 3)


def test_per_frame_boxes_fall_back_to_the_nearest_earlier_box(tmp_path):
    folder = tmp_path / "frames"
    write_frame_folder(folder, textured(6))
    full = decode_all(folder)
    boxes = {"2.png": [0, 0, 16, 16], 3: [32, 16, 48, 32]}  # file name or 0-based index
    clip = decode_all(folder, boxes=boxes, size=16)
    assert clip.frames.shape == (6, 16, 16, 3)
    # 1.png (index 0) has no box before it: the full frame, resized.
    assert not np.array_equal(clip.frames[0], full.frames[0, :16, :16])
    np.testing.assert_array_equal(clip.frames[1], full.frames[1, :16, :16])
    np.testing.assert_array_equal(clip.frames[2], full.frames[2, :16, :16])
    np.testing.assert_array_equal(clip.frames[4], full.frames[4, 16:32, 32:48])
    np.testing.assert_array_equal(clip.frames[5], full.frames[5, 16:32, 32:48])


def test_per_frame_boxes_on_a_video_range_use_absolute_frame_indices(media):
    boxes = {0: [0, 0, 32, 24], 15: [32, 24, 64, 48]}
    clip = decode_all(media["30fps"], boxes=boxes, start_s=0.4, end_s=0.6)
    assert list(clip.source_index) == [12, 13, 14, 15, 16, 17]
    assert clip.frames.shape == (6, 24, 32, 3)


def test_boxes_of_different_sizes_need_a_size(tmp_path):
    folder = tmp_path / "frames"
    write_frame_folder(folder, textured(3))
    with pytest.raises(UserError, match="size="):
        list(iter_video_frames(folder, boxes={0: [0, 0, 10, 10], 1: [0, 0, 20, 20]}))
    with pytest.raises(UserError, match="empty"):
        list(iter_video_frames(folder, boxes=[10, 10, 5, 20]))


@pytest.mark.parametrize("size, mode, shape", [(32, "square", (32, 32)),
                                               (24, "shorter", (24, 32)),
                                               ((20, 10), "square", (20, 10))])
def test_resize(media, size, mode, shape):
    clip = decode_all(media["25fps"], size=size, resize_mode=mode, fps=5)
    assert clip.frames.shape == (5, *shape, 3)
    assert frame_ids(clip.frames) == [0, 5, 10, 15, 20]


# --- frame folders -----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_frame_folder_is_read_in_numeric_order(tmp_path, ext):
    folder = tmp_path / f"frames_{ext}"
    write_frame_folder(folder, gray_frames(10), ext=ext)
    assert (folder / "10.png").exists() if ext == "png" else (folder / "10.jpg").exists()
    info = probe(folder, folder_fps=10)
    assert info.is_frame_folder and info.n_frames == 10 and (info.width, info.height) == (W, H)
    clip = decode_all(folder, folder_fps=10)
    assert frame_ids(clip.frames) == list(range(10))  # 2.png before 10.png
    np.testing.assert_allclose(clip.times_s, np.arange(10) / 10)
    resampled = decode_all(folder, folder_fps=10, fps=4)
    np.testing.assert_allclose(resampled.times_s, [0, 0.25, 0.5, 0.75])
    assert frame_ids(resampled.frames) == [0, 2, 5, 7]


def test_frame_folder_errors(tmp_path):
    with pytest.raises(MediaError) as err:
        list(iter_video_frames(tmp_path / "missing"))
    assert err.value.stage == "open"
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError) as err:
        list(iter_video_frames(tmp_path / "empty"))
    assert err.value.stage == "empty"
    folder = tmp_path / "frames"
    write_frame_folder(folder, gray_frames(3))
    (folder / "2.png").write_bytes(b"not a png")
    with pytest.raises(MediaError, match="2.png") as err:
        list(iter_video_frames(folder))
    assert err.value.stage == "decode_video"
    with pytest.raises(MediaError) as err:
        load_audio(folder, SR)
    assert err.value.stage == "no_audio"


# --- audio -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 8000, 22050, 48000])
def test_wav_resampled_length_is_duration_times_rate(media, rate):
    audio = load_audio(media["wav"], rate)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 2.0 * rate) <= 1
    # A 440 Hz tone stays a 440 Hz tone at the new rate.
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()] == pytest.approx(440, abs=1)


def test_stereo_is_mixed_to_the_mean_of_its_channels(media):
    info = probe(media["stereo"])
    assert (info.channels, info.sample_rate, info.has_video) == (2, SR, False)
    mono = load_audio(media["stereo"], SR)
    np.testing.assert_allclose(mono, 0.25 * tone(1.5), atol=1e-4)  # (x - 0.5 x) / 2


def test_audio_streams_in_chunks_and_cuts_time_ranges(media):
    chunks = list(iter_audio(media["wav"], 8000, chunk_s=0.3))
    assert [len(c) for c in chunks] == [2400] * 6 + [1600]
    np.testing.assert_allclose(np.concatenate(chunks), load_audio(media["wav"], 8000))
    part = load_audio(media["wav"], SR, start_s=0.5, end_s=1.25)
    assert len(part) == 12000
    np.testing.assert_allclose(part, tone(2.0)[8000:20000], atol=1e-4)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".flv", ".avi"])
def test_utterance_audio_cut_from_a_dialogue_video(tmp_path, suffix):
    # Matroska seeks land after the time asked for, and lossy decoders need a few frames after a
    # seek before they are right; the cut must still match the whole track on the media's clock.
    path = tmp_path / f"dialogue{suffix}"
    write_video(path, gray_frames(10), fps=25, audio=tone(3.0))
    part = load_audio(path, SR, start_s=1.3, end_s=2.1)
    assert len(part) == round(0.8 * SR)
    whole = load_audio(path, SR)[round(1.3 * SR):round(2.1 * SR)]
    np.testing.assert_allclose(part, whole, atol=1e-3)


@pytest.mark.parametrize("suffix", [".m4a", ".mp4", ".flac", ".mp3"])
def test_audio_only_files(tmp_path, suffix):
    path = tmp_path / f"voice{suffix}"
    write_audio(path, tone(1.0), SR)
    info = probe(path)
    assert info.has_audio and not info.has_video
    audio = load_audio(path, 8000)
    # Lossy codecs add up to one codec frame of padding (AAC 1024, MP3 1152 samples at 16 kHz).
    assert abs(len(audio) - 8000) <= 1152 // 2
    with pytest.raises(MediaError) as err:
        list(iter_video_frames(path))
    assert err.value.stage == "no_video"


def test_audio_track_of_a_video(media):
    audio = load_audio(media["25fps"], SR)
    assert abs(len(audio) - SR) <= 1024  # AAC padding
    # AAC is lossy (a few local artifacts), but aligned with the source sample for sample.
    ref = tone(1.0)[1000:15000]
    assert np.abs(audio[1000:15000] - ref).mean() < 0.01
    assert np.corrcoef(audio[1000:15000], ref)[0, 1] > 0.99


def test_a_video_without_audio_says_so(media):
    assert not probe(media["30fps"]).has_audio
    with pytest.raises(MediaError) as err:
        load_audio(media["30fps"], SR)
    assert err.value.stage == "no_audio"
    assert str(media["30fps"]) in str(err.value)


# --- broken files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def truncated(tmp_path_factory) -> dict[str, Path]:
    """Noisy 4 s clips (so video data dominates) cut at half their bytes."""
    root = tmp_path_factory.mktemp("broken")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(100, H, W, 3), dtype=np.uint8)
    out = {}
    for suffix in (".mp4", ".mkv", ".flv"):
        whole = root / f"whole{suffix}"
        write_video(whole, frames, fps=25, audio=tone(4.0))
        data = whole.read_bytes()
        cut = root / f"cut{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        out[suffix] = cut
    return out


def test_truncated_mp4_cannot_be_opened(truncated):
    # The index (moov) is written at the end of an MP4: half a file has none.
    with pytest.raises(MediaError) as err:
        probe(truncated[".mp4"])
    assert err.value.stage == "open"
    assert str(truncated[".mp4"]) in str(err.value)


@pytest.mark.parametrize("suffix", [".mkv", ".flv"])
def test_truncated_video_yields_what_is_readable_then_fails(truncated, suffix):
    path = truncated[suffix]
    got = 0
    with pytest.raises(MediaError) as err:
        for batch in iter_video_frames(path, batch_size=8):
            got += len(batch)
    assert err.value.stage == "decode_video"
    assert got >= 16  # the readable first part came out before the error
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "truncated" in message or "after" in message


def test_truncated_audio_fails_with_a_reason(truncated):
    with pytest.raises(MediaError) as err:
        load_audio(truncated[".mkv"], SR)
    assert err.value.stage == "decode_audio"
    assert "truncated" in str(err.value)


def test_zero_length_missing_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for call in (lambda p: list(iter_video_frames(p)), lambda p: load_audio(p, SR), probe):
        with pytest.raises(MediaError) as err:
            call(empty)
        assert err.value.stage == "empty"
        assert "0 bytes" in str(err.value)
    with pytest.raises(MediaError) as err:
        probe(tmp_path / "nowhere.mp4")
    assert err.value.stage == "open" and "no such file" in str(err.value)
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError) as err:
        list(iter_video_frames(garbage))
    assert err.value.stage in ("open", "no_video", "empty")
    assert isinstance(err.value, UserError)
    # Failures travel from decode workers to the ledger intact.
    copy = pickle.loads(pickle.dumps(err.value))
    assert (copy.stage, copy.path, str(copy)) == (err.value.stage, err.value.path, str(err.value))


# --- streaming memory --------------------------------------------------------------------------


def _decode_peak(path: Path) -> tuple[int, int, int]:
    """(frames, tracemalloc peak bytes, RSS growth bytes) while decoding in batches."""
    gc.collect()
    process = psutil.Process()
    rss0 = process.memory_info().rss
    rss_max = rss0
    tracemalloc.start()
    n = 0
    for i, batch in enumerate(iter_video_frames(path, fps=None, batch_size=16)):
        n += len(batch)
        if i % 8 == 0:
            rss_max = max(rss_max, process.memory_info().rss)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return n, peak, rss_max - rss0


def test_memory_does_not_grow_with_clip_length(tmp_path):
    side = 96
    short, long = tmp_path / "short.mp4", tmp_path / "long.mp4"

    def moving(n: int):
        base = np.linspace(0, 255, side, dtype=np.uint8)
        for i in range(n):
            yield np.repeat(np.roll(np.tile(base, (side, 1)), i, axis=1)[..., None], 3, axis=2)

    write_video(short, moving(150), fps=25)   # 6 s
    write_video(long, moving(1500), fps=25)   # 60 s
    _decode_peak(short)  # warm up codec and allocator pools
    n_short, peak_short, rss_short = _decode_peak(short)
    n_long, peak_long, rss_long = _decode_peak(long)
    assert (n_short, n_long) == (150, 1500)
    # Holding the whole 60 s clip would take 1500 * 96 * 96 * 3 = 41 MB.
    assert peak_long < peak_short * 1.5 + 256 * 1024
    assert rss_long < rss_short + 16 * 2**20


def test_long_audio_streams_in_bounded_memory(tmp_path):
    path = tmp_path / "long.wav"
    write_audio(path, tone(60.0), SR)
    tracemalloc.start()
    total = sum(len(c) for c in iter_audio(path, SR, chunk_s=1.0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert total == 60 * SR
    assert peak < 2 * 2**20  # the whole file as float32 would be 3.8 MB
