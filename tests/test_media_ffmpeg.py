"""Media made by the ffmpeg command line, decoded by us, compared with what ffmpeg/ffprobe say.

Phones write a rotation flag, muxers shift an audio track that starts late, datasets ship frame
folders with holes in their numbering. In each case the rows in the store must be what ffmpeg
itself shows: the same picture orientation, the same start times, the same frame times.
ffmpeg comes from Debian's package (`.ci/run` installs it when missing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from extract.media import iter_timed_audio, iter_video_frames, probe
from extract.media_orientation import UnsupportedRotation, orientation_from_matrix
from extract.runner import ExtractOptions, run_extraction
from features_store import open_store
from pipelines.synthetic.av_writer import write_frame_folder

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="needs the ffmpeg command line (apt-get install ffmpeg)")

VIDEO = "hsemotion-enet-b0"
AUDIO = "vggish-react"  # one row per 40 ms: fine enough to see a 0.4 s shift


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def ffprobe_streams(path: Path) -> list[dict]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["streams"]


def ffmpeg_rgb_frames(path: Path) -> np.ndarray:
    """Every frame as ffmpeg shows it (its automatic rotation on), RGB uint8 [n, H, W, 3]."""
    stream = next(s for s in ffprobe_streams(path) if s["codec_type"] == "video")
    width, height = stream["width"], stream["height"]
    rotation = next((int(d["rotation"]) for d in stream.get("side_data_list", [])
                     if "rotation" in d), 0)
    if rotation % 180:
        width, height = height, width
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)


@pytest.fixture(scope="module")
def phone(tmp_path_factory) -> dict[int, Path]:
    """A 160x120 test pattern, stored four ways: upright and with rotation 90 / 180 / 270."""
    root = tmp_path_factory.mktemp("phone")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=0.4", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(root / "r0.mp4"))
    out = {0: root / "r0.mp4"}
    for degrees in (90, 180, 270):
        out[degrees] = root / f"r{degrees}.mp4"
        ffmpeg("-i", str(out[0]), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}",
               str(out[degrees]))
    return out


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_rotated_phone_video_decodes_as_ffmpeg_shows_it(phone, degrees):
    path = phone[degrees]
    shown = ffmpeg_rgb_frames(path)
    frames = np.concatenate([b.frames for b in iter_video_frames(path)])
    assert frames.shape == shown.shape  # 90 / 270: 120 wide, 160 tall, as ffprobe says
    assert np.abs(frames.astype(int) - shown).mean() < 1.0
    info = probe(path)
    assert (info.height, info.width) == shown.shape[1:3]


def test_rotated_clip_in_the_store_has_ffmpegs_row_count(phone, tmp_path):
    clips = [{"clip_id": f"r{d}", "video": str(p)} for d, p in phone.items()]
    store = open_store(str(tmp_path / "s.zarr"))
    options = ExtractOptions(encoders=[VIDEO], weights="random", reduced=True, device="cpu",
                             dtype="float32", decode_workers=1)
    run_extraction(clips, store, options, progress=False)
    rows = {c.clip_id: c.n_rows for c in store.shape_manifest(VIDEO)}
    assert rows == {f"r{d}": len(ffmpeg_rgb_frames(p)) for d, p in phone.items()}
    # The encoder saw the upright picture: the 90-degree clip differs from the upright one.
    assert not np.allclose(store.read_clip(VIDEO, "r0"), store.read_clip(VIDEO, "r90"))


def test_display_matrices_that_are_not_right_angles_are_refused():
    quarter = np.array([[0, -65536, 0], [65536, 0, 0], [0, 0, 1 << 30]], dtype=np.int32)
    assert orientation_from_matrix(quarter).transpose
    mirror = np.array([[-65536, 0, 0], [0, 65536, 0], [0, 0, 1 << 30]], dtype=np.int32)
    assert orientation_from_matrix(mirror).flip_cols
    slanted = np.array([[46341, -46341, 0], [46341, 46341, 0], [0, 0, 1 << 30]], dtype=np.int32)
    with pytest.raises(UnsupportedRotation, match="45.0 degrees"):
        orientation_from_matrix(slanted)


# ---------------------------------------------------------------------------------------------
# Audio that starts after the video


@pytest.fixture(scope="module")
def delayed(tmp_path_factory) -> dict[str, Path]:
    """Video from 0 s; the audio track shifted to start at 0.436 s (half a second of silence,
    then a tone), as AAC in MP4 and as PCM in Matroska."""
    root = tmp_path_factory.mktemp("delayed")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2.5", "-f", "lavfi",
           "-i", "aevalsrc='if(gte(t,0.5),0.5*sin(2*PI*440*t),0)':s=24000:d=2",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(root / "plain.mp4"))
    out = {}
    for name, codec in (("delayed.mp4", "aac"), ("delayed.mkv", "pcm_s16le")):
        out[name] = root / name
        ffmpeg("-i", str(root / "plain.mp4"), "-itsoffset", "0.436", "-i", str(root / "plain.mp4"),
               "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", codec, str(out[name]))
    return out


def _start_times(path: Path) -> dict[str, float]:
    return {s["codec_type"]: float(s["start_time"]) for s in ffprobe_streams(path)}


def test_delayed_audio_starts_where_ffprobe_says(delayed):
    path = delayed["delayed.mkv"]
    audio_start = _start_times(path)["audio"]
    assert audio_start > 0.4  # the muxer kept the shift
    chunks = list(iter_timed_audio(path, 24000, chunk_s=10.0))
    first_time, samples = chunks[0]
    assert first_time == pytest.approx(audio_start, abs=1e-3)
    onset = first_time + np.argmax(np.abs(samples) > 0.05) / 24000
    assert onset == pytest.approx(audio_start + 0.5, abs=0.005)  # the tone, on the media clock


@pytest.mark.parametrize("name", ["delayed.mp4", "delayed.mkv"])
def test_stored_t0_of_every_stream_is_the_medias_own(delayed, tmp_path, name):
    path = delayed[name]
    starts = _start_times(path)
    store = open_store(str(tmp_path / "s.zarr"))
    options = ExtractOptions(encoders=[VIDEO, AUDIO], weights="random", reduced=True,
                             device="cpu", dtype="float32", decode_workers=1)
    run_extraction([{"clip_id": "c", "video": str(path)}], store, options, progress=False)
    (audio,) = store.shape_manifest(AUDIO)
    (video,) = store.shape_manifest(VIDEO)
    assert audio.t0 == pytest.approx(starts["audio"], abs=1e-3)
    assert video.t0 == pytest.approx(starts["video"], abs=1e-3)
    # On the video's timeline the audio is absent until it starts, then present.
    feats, mask = store.read_aligned("c", [VIDEO, AUDIO], frame_shift_s=0.04)
    times = np.arange(len(mask)) * 0.04
    assert not mask[times < starts["audio"] - 0.03].any()
    assert mask[(times > starts["audio"] + 0.03) & (times < 2.0)].all()
    # The tone begins 0.5 s into the audio: aligned rows change there, not 0.44 s earlier.
    audio_rows = next(v for k, v in feats.items() if k.startswith(AUDIO))
    silent_row = audio_rows[int(np.ceil((starts["audio"] + 0.1) / 0.04))]
    changed = ~np.isclose(audio_rows, silent_row, atol=1e-4).all(axis=1) & mask
    onset = times[np.argmax(changed & (times > starts["audio"]))]
    assert onset == pytest.approx(starts["audio"] + 0.5, abs=0.09)


# ---------------------------------------------------------------------------------------------
# Frame folders with holes in the numbering


def _numbered_frames(n: int) -> np.ndarray:
    return np.stack([np.full((16, 16, 3), 10 + 20 * i, np.uint8) for i in range(n)])


def test_frame_folder_with_missing_numbers_is_timed_by_the_numbers(tmp_path):
    folder = tmp_path / "faces"
    write_frame_folder(folder, _numbered_frames(10))          # 1.png ... 10.png
    for missing in (5, 6, 7):                                 # no face found in these frames
        (folder / f"{missing}.png").unlink()
    batch = next(iter_video_frames(folder, folder_fps=10))
    # Image n.png is frame n of the video: at (n - 1) / fps, whatever is missing before it.
    names = [1, 2, 3, 4, 8, 9, 10]
    np.testing.assert_allclose(batch.times_s, [(n - 1) / 10 for n in names])
    info = probe(folder, folder_fps=10)
    assert info.n_frames == 7 and info.duration_s == pytest.approx(1.0)
    # Resampled at the folder rate, a missing frame shows the last one before it.
    grid = next(iter_video_frames(folder, fps=10, folder_fps=10))
    np.testing.assert_allclose(grid.times_s, np.arange(10) / 10)
    levels = grid.frames[:, 0, 0, 0]
    assert list(levels) == [10 + 20 * (n - 1) for n in [1, 2, 3, 4, 4, 4, 4, 8, 9, 10]]
    # A time range selects by time, not by position in the list.
    late = next(iter_video_frames(folder, folder_fps=10, start_s=0.75))
    np.testing.assert_allclose(late.times_s, [0.8, 0.9])


def test_frame_folder_with_gaps_in_the_store_matches_the_expected_times(tmp_path):
    folder = tmp_path / "faces"
    write_frame_folder(folder, _numbered_frames(10))
    for missing in (5, 6, 7):
        (folder / f"{missing}.png").unlink()
    store = open_store(str(tmp_path / "s.zarr"))
    options = ExtractOptions(encoders=[VIDEO], weights="random", reduced=True, device="cpu",
                             dtype="float32", fps=10, decode_workers=1)
    run_extraction([{"clip_id": "f", "frames": str(folder), "fps": 10}], store, options,
                   progress=False)
    rows = store.read_clip(VIDEO, "f")
    assert rows.shape[0] == 10                 # 1 s at 10 fps, gaps held
    np.testing.assert_allclose(rows[3], rows[6], atol=1e-6)  # 4.png on screen at 0.4 .. 0.6 s
    assert not np.allclose(rows[6], rows[7])   # 8.png at 0.7 s
