"""A small CMU-MOSEI copy: full videos, segmented transcripts, the labels computational sequence
(HDF5 .csd in the CMU SDK's layout) and the standard fold lists.

Planted signal: each segment has a dominant emotion whose intensity (1..3) sets the frame colour
and pitch during the segment, and an emotion word in the transcript; sentiment follows the
emotion (positive for happy and surprise).
"""

from __future__ import annotations

import string
from pathlib import Path

import h5py
import numpy as np

from ..datasets.mosei import CSD_COLUMNS, FOLDS
from ..synthetic.av_writer import write_video
from .base import SampleInfo, SampleOptions, hue_colour, render_frames, split_sizes, tone_track

FPS = 25
SAMPLE_RATE = 16000
DEFAULTS = {"clips": 18, "seconds": 2.0, "size": 64}
SEGMENTS_PER_VIDEO = 3
EMOTIONS = CSD_COLUMNS[1:]
WORDS = {"happy": "delighted", "sad": "heartbroken", "anger": "outraged", "surprise": "amazed",
         "disgust": "disgusted", "fear": "scared"}
_ID_CHARS = string.ascii_letters + string.digits + "-_"


def generate(out: Path, options: SampleOptions) -> SampleInfo:
    rng = np.random.default_rng(options.seed)
    n_videos = max(3, -(-options.clips // SEGMENTS_PER_VIDEO))
    vids = ["".join(rng.choice(list(_ID_CHARS), size=11)) for _ in range(n_videos)]
    raw = out / "Raw"
    csd_data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    index = 0
    for vid in vids:
        features, intervals, transcript = [], [], []
        n = int(round((SEGMENTS_PER_VIDEO * (options.seconds + 0.5) + 0.5) * FPS))
        times = np.arange(n) / FPS
        colours = np.tile(np.array([0.4, 0.4, 0.4], np.float32), (n, 1))
        pitch, loud = np.full(n, 100.0), np.full(n, 0.02)
        for k in range(SEGMENTS_PER_VIDEO):
            emotion = EMOTIONS[index % len(EMOTIONS)]
            intensity = 1.0 + (index // len(EMOTIONS)) % 3
            index += 1
            start = 0.5 + k * (options.seconds + 0.5)
            end = start + options.seconds
            row = np.zeros(len(CSD_COLUMNS))
            row[CSD_COLUMNS.index(emotion)] = intensity
            row[0] = intensity if emotion in ("happy", "surprise") else -intensity
            features.append(row)
            intervals.append([start, end])
            transcript.append(f"{vid}___{k}___{start:.3f}___{end:.3f}___i was "
                              f"{WORDS[emotion]} by it")
            inside = (times >= start) & (times < end)
            colours[inside] = hue_colour(EMOTIONS.index(emotion) / len(EMOTIONS),
                                         value=0.4 + 0.2 * intensity)
            pitch[inside] = 180.0 * 2.0 ** (EMOTIONS.index(emotion) / 4)
            loud[inside] = 0.1 * intensity
        frames = render_frames(colours, options.size)
        audio = tone_track(pitch, FPS, SAMPLE_RATE, loud, rng)
        write_video(raw / "Videos" / "Full" / "Combined" / f"{vid}.mp4", frames, FPS,
                    audio=audio, sample_rate=SAMPLE_RATE)
        path = raw / "Transcript" / "Segmented" / "Combined" / f"{vid}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(transcript) + "\n")
        csd_data[vid] = (np.asarray(features), np.asarray(intervals))
    _write_csd(out / "Labels" / "CMU_MOSEI_Labels.csd", csd_data)
    sizes = split_sizes(n_videos, (0.7, 0.15, 0.15))
    start = 0
    for split, count in zip(FOLDS, sizes):
        (out / f"{FOLDS[split]}.txt").write_text("\n".join(vids[start: start + count]) + "\n")
        start += count
    return SampleInfo(
        layout="mosei", root=str(out), clips=n_videos * SEGMENTS_PER_VIDEO,
        seconds=options.seconds, seed=options.seed, size=options.size,
        signal="dominant emotion -> colour and pitch in the segment, intensity -> brightness "
               "and loudness, an emotion word in the transcript",
        details={"videos_per_fold": dict(zip(FOLDS, sizes))})


def _write_csd(path: Path, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """The CMU SDK's computational-sequence layout: <name>/data/<vid>/{features, intervals}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        top = f.create_group("All Labels")
        group = top.create_group("data")
        for vid, (features, intervals) in data.items():
            g = group.create_group(vid)
            g.create_dataset("features", data=features.astype(np.float32))
            g.create_dataset("intervals", data=intervals.astype(np.float64))
        meta = top.create_group("metadata")
        meta.attrs["root name"] = "All Labels"
        meta.attrs["dimension names"] = ",".join(CSD_COLUMNS)
