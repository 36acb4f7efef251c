"""Decoding that keeps a device fed: worker processes, and the optional torchcodec decoder.

A user with many cores asks for decode workers in processes (`--decode-in processes`) and expects
exactly the tensors the in-process decoder gives; a user with torchcodec installed picks
`--decoder torchcodec` and expects the same frames at the same times as PyAV.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from extract.decode_ahead import (
    ClipEnd,
    ClipError,
    DecodeAhead,
    DecodeSettings,
    DecodeSpec,
    StreamError,
    VideoItem,
)
from extract.encoders.swin import PREPROCESS as SWIN_PREPROCESS
from extract.media import MediaError, iter_video_frames
from pipelines.synthetic.av_writer import write_video

# Irregular gaps between 10 ms and 150 ms, as in the media tests.
VFR_PTS = [0.0, 0.04, 0.05, 0.2, 0.24, 0.25, 0.4, 0.55, 0.56, 0.6, 0.7, 0.72]


def textured(n: int, h: int = 48, w: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(h * 2, w * 2, 3), dtype=np.uint8)
    for k in range(n):
        yield np.roll(texture, (2 * k, 3 * k), (0, 1))[:h, :w]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decode")
    files = {
        "25fps": root / "clip25.mp4", "ntsc": root / "clip2997.mp4",
        "30fps": root / "clip30.mkv", "vfr_mp4": root / "vfr.mp4", "vfr_mkv": root / "vfr.mkv",
        "avi": root / "clip.avi", "flv": root / "clip.flv", "odd": root / "odd.mp4",
    }
    write_video(files["25fps"], textured(25), fps=25)
    write_video(files["ntsc"], textured(30), fps=Fraction(30000, 1001))
    write_video(files["30fps"], textured(30), fps=30)
    write_video(files["vfr_mp4"], textured(len(VFR_PTS)), fps=25, pts_s=VFR_PTS)
    write_video(files["vfr_mkv"], textured(len(VFR_PTS)), fps=25, pts_s=VFR_PTS)
    write_video(files["avi"], textured(20), fps=25, codec="mpeg4")
    write_video(files["flv"], textured(20), fps=25)
    write_video(files["odd"], textured(12, 37, 51), fps=25)
    return files


def decode_all(source, **kwargs):
    batches = list(iter_video_frames(source, **kwargs))
    return (np.concatenate([b.frames for b in batches]),
            np.concatenate([b.times_s for b in batches]),
            np.concatenate([b.source_times_s for b in batches]),
            np.concatenate([b.source_index for b in batches]))


def collect(ahead: DecodeAhead) -> dict[str, list]:
    out: dict[str, list] = {}
    try:
        for clip, items in ahead:
            got = out.setdefault(clip["clip_id"], [])
            for item in items:
                if isinstance(item, VideoItem):
                    inputs = {k: v.clone() for k, v in item.inputs.items()}
                    inputs["shared"] = len({id(v) for v in item.inputs.values()}) == 1
                    got.append((item.times_s.copy(), inputs))
                elif isinstance(item, StreamError | ClipError):
                    got.append(("error", item.stage))
                else:
                    assert isinstance(item, ClipEnd)
    finally:
        ahead.close()
    return out


def test_decode_worker_processes_hand_over_the_same_tensors_in_clip_order(media, tmp_path):
    clips = [{"clip_id": key, "video": str(media[key])}
             for key in ("25fps", "vfr_mkv", "avi", "flv", "ntsc")]
    clips.append({"clip_id": "missing", "video": str(tmp_path / "nope.mp4")})
    specs = [DecodeSpec("swin", "video", fps=10.0, preprocess=SWIN_PREPROCESS),
             DecodeSpec("swin-again", "video", fps=10.0, preprocess=SWIN_PREPROCESS)]
    pending = {c["clip_id"]: {"swin", "swin-again"} for c in clips}
    threads = collect(DecodeAhead(clips, specs, pending, DecodeSettings(workers=1)))
    processes = collect(DecodeAhead(clips, specs, pending,
                                    DecodeSettings(workers=2, processes=True)))
    assert list(processes) == [c["clip_id"] for c in clips]
    assert processes["missing"] == [("error", "open")] == threads["missing"]
    for clip_id in list(threads)[:-1]:
        assert len(processes[clip_id]) == len(threads[clip_id]) > 0
        for (t_a, a), (t_b, b) in zip(threads[clip_id], processes[clip_id]):
            np.testing.assert_array_equal(t_a, t_b)
            for key in ("swin", "swin-again"):
                assert a[key].shape == b[key].shape
                assert (a[key] == b[key]).all()
            # Two streams with the same transform were preprocessed once, sharing the tensor.
            assert a["shared"] and b["shared"]



CASES = [("25fps", {}), ("ntsc", {}), ("30fps", {"fps": 25.0}), ("vfr_mp4", {}),
         ("vfr_mkv", {"fps": 25.0}), ("avi", {}), ("flv", {"fps": 10.0}), ("odd", {}),
         ("25fps", {"fps": 10.0, "start_s": 0.3, "end_s": 0.8}),
         ("ntsc", {"size": 32, "resize_mode": "shorter"})]


@pytest.mark.parametrize("key, kwargs", CASES)
def test_torchcodec_gives_the_same_frames_and_times_as_pyav(media, key, kwargs):
    pytest.importorskip("torchcodec.decoders", reason="torchcodec is an optional decoder")
    frames, times, source_times, index = decode_all(media[key], **kwargs)
    tc_frames, tc_times, tc_source_times, tc_index = decode_all(media[key], decoder="torchcodec",
                                                                 **kwargs)
    np.testing.assert_array_equal(tc_times, times)
    np.testing.assert_allclose(tc_source_times, source_times, atol=1e-9)
    np.testing.assert_array_equal(tc_index, index)
    assert tc_frames.shape == frames.shape
    assert np.array_equal(tc_frames, frames), \
        f"max difference {np.abs(tc_frames.astype(int) - frames).max()}"


def test_torchcodec_reports_missing_and_broken_files_as_media_errors(tmp_path):
    pytest.importorskip("torchcodec.decoders", reason="torchcodec is an optional decoder")
    with pytest.raises(MediaError) as err:
        decode_all(tmp_path / "none.mp4", decoder="torchcodec")
    assert err.value.stage == "open"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(MediaError) as err:
        decode_all(garbage, decoder="torchcodec")
    assert err.value.stage == "open" and "\n" not in str(err.value)


def test_shared_resize_gives_each_encoder_exactly_its_upstream_transform():
    import torch

    from extract.decode_ahead import _shared_preprocess
    from extract.encoders.clip import PREPROCESS as CLIP_PREPROCESS
    from extract.encoders.hsemotion import PREPROCESS as HSEMOTION_PREPROCESS

    frames = np.stack(list(textured(4, 240, 320)))
    transforms = {"clip": CLIP_PREPROCESS, "swin": SWIN_PREPROCESS,
                  "hsemotion": HSEMOTION_PREPROCESS, "clip-again": CLIP_PREPROCESS}
    specs = [DecodeSpec(k, "video", preprocess=p) for k, p in transforms.items()]
    shared = _shared_preprocess(frames, specs)
    for key, transform in transforms.items():
        assert torch.equal(shared[key], transform(frames)), key
    assert shared["clip"] is shared["clip-again"]

    # The faster tensor resize (opt-in, its own stream key) stays within about a grey level.
    fast = _shared_preprocess(frames, specs, resize_with="tensor")
    for key, transform in transforms.items():
        grey_levels = (fast[key] - shared[key]).abs() * torch.tensor(transform.std)[:, None,
                                                                                   None] * 255
        assert fast[key].shape == shared[key].shape
        assert float(grey_levels.max()) <= 1.5, key


@pytest.mark.parametrize("degrees", [90, 270])
def test_torchcodec_shows_a_rotated_phone_video_as_pyav_does(tmp_path, degrees):
    import shutil
    import subprocess

    pytest.importorskip("torchcodec.decoders", reason="torchcodec is an optional decoder")
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs the ffmpeg command to write a rotation flag")
    upright, rotated = tmp_path / "r0.mp4", tmp_path / f"r{degrees}.mp4"
    write_video(upright, textured(10, 48, 64), fps=25)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(upright), "-c", "copy",
                    "-metadata:s:v:0", f"rotate={degrees}", str(rotated)], check=True)
    frames = decode_all(rotated)[0]
    assert frames.shape[1:3] == (64, 48)
    assert np.array_equal(decode_all(rotated, decoder="torchcodec")[0], frames)
