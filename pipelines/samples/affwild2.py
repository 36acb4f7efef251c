"""A small Aff-Wild2 copy: raw videos in batch folders and the VA challenge label files.

Planted signal: per-frame valence sets the red level and arousal the green level of the
person's half (or whole) frame; arousal also sets the voice's pitch and the marker's speed. One
video runs at 25 fps (the rest at 30) so the adapter must use the real rate, one is an .avi, one
has two annotated people (`_left`/`_right`, each on their half of the frame), and one starts with
a few frames marked -5 (invalid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..synthetic.av_writer import write_video
from .base import SampleInfo, SampleOptions, render_frames, smooth_signal, split_sizes, tone_track

SAMPLE_RATE = 16000
DEFAULTS = {"clips": 8, "seconds": 4.0, "size": 64}
INVALID_FRAMES = 4


def generate(out: Path, options: SampleOptions) -> SampleInfo:
    rng = np.random.default_rng(options.seed)
    n_videos = max(3, options.clips - 1)  # the two-person video gives two clips
    # All three sets, so every head command (train, evaluate/predict --split test) has a split.
    sizes = split_sizes(n_videos, (0.6, 0.2, 0.2))
    sets = (["Train_Set"] * sizes[0] + ["Validation_Set"] * sizes[1]
            + ["Test_Set"] * sizes[2])
    clips = 0
    for i, set_name in enumerate(sets):
        fps = 25 if i == 1 else 30
        two_people = i == 2
        suffix = ".avi" if i == 3 else ".mp4"
        vid = f"{i + 1}-{fps}-{options.size}x{options.size}"
        n = int(round(options.seconds * fps))
        people = ["left", "right"] if two_people else [None]
        va = {p: np.stack([0.9 * smooth_signal(rng, n, fps), 0.9 * smooth_signal(rng, n, fps)],
                          axis=1) for p in people}
        frames = _render(va, n, options.size, fps)
        arousal = np.mean([va[p][:, 1] for p in people], axis=0)
        audio = tone_track(300.0 * 2.0 ** arousal, fps, SAMPLE_RATE, 0.3, rng)
        batch = "batch1" if i % 2 == 0 else "batch2"
        codec = "mpeg4" if suffix == ".avi" else "libx264"
        write_video(out / batch / f"{vid}{suffix}", frames, fps, audio=audio,
                    sample_rate=SAMPLE_RATE, codec=codec)
        for person in people:
            values = va[person].copy()
            if i == 0:
                values[:INVALID_FRAMES] = -5.0
            name = vid if person is None else f"{vid}_{person}"
            path = out / "Annotations" / "VA_Estimation_Challenge" / set_name / f"{name}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = ["valence,arousal"] + [f"{v:.3f},{a:.3f}" for v, a in values]
            path.write_text("\n".join(lines) + "\n")
            clips += 1
    return SampleInfo(
        layout="affwild2", root=str(out), clips=clips, seconds=options.seconds,
        seed=options.seed, size=options.size,
        signal="valence -> red, arousal -> green, pitch and marker speed of the person's frame "
               "region",
        details={"videos_per_set": {"Train_Set": sizes[0], "Validation_Set": sizes[1],
                                    "Test_Set": sizes[2]},
                 "fps": "30 (video 2: 25)", "invalid_frames_video_1": INVALID_FRAMES})


def _render(va: dict, n: int, size: int, fps: float) -> np.ndarray:
    halves = []
    for values in va.values():
        colours = np.stack([0.5 + 0.45 * values[:, 0], 0.5 + 0.45 * values[:, 1],
                            np.full(n, 0.3)], axis=1)
        # Marker speed follows arousal: integrate it into an angle.
        angle = np.cumsum(0.15 + 0.1 * values[:, 1]) * 2 * np.pi / fps * 4
        marker = np.stack([0.7 * np.cos(angle), 0.7 * np.sin(angle)], axis=1)
        width = size if len(va) == 1 else size // 2
        halves.append(render_frames(colours, (size, width), marker))
    return np.concatenate(halves, axis=2)
