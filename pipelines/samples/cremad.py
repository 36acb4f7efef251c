"""A small CREMA-D copy: AudioWAV/*.wav and VideoFlash/*.flv named Actor_Sentence_Emotion_Level.

Planted signal: the emotion sets the frame colour and the voice's pitch, the intensity the
brightness, loudness and the marker's speed. At least 10 actors, so the 80/10/10 actor split
has every split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..datasets.cremad import EMOTIONS, SENTENCES
from ..synthetic.av_writer import write_audio, write_video
from .base import SampleInfo, SampleOptions, circle_path, hue_colour, render_frames, tone_track

FPS = 30
SAMPLE_RATE = 16000
DEFAULTS = {"clips": 24, "seconds": 2.0, "size": 64}
MIN_ACTORS = 10
LEVELS = {"LO": 0.6, "MD": 0.8, "HI": 1.0, "XX": 0.8}
PITCH = {"ANG": 330.0, "DIS": 260.0, "FEA": 440.0, "HAP": 520.0, "NEU": 200.0, "SAD": 160.0}


def generate(out: Path, options: SampleOptions) -> SampleInfo:
    rng = np.random.default_rng(options.seed)
    n_clips = max(options.clips, MIN_ACTORS)
    n_actors = max(MIN_ACTORS, n_clips // 2)
    sentences = list(SENTENCES)
    levels = list(LEVELS)
    n = max(2, int(round(options.seconds * FPS)))
    for i in range(n_clips):
        actor = 1001 + i % n_actors
        emotion = EMOTIONS[(i + i // n_actors) % len(EMOTIONS)]
        level = "XX" if emotion == "NEU" else levels[i % 3]
        stem = f"{actor}_{sentences[i % len(sentences)]}_{emotion}_{level}"
        strength = LEVELS[level]
        colour = hue_colour(EMOTIONS.index(emotion) / len(EMOTIONS), value=0.5 + 0.4 * strength)
        frames = render_frames(np.tile(colour, (n, 1)), options.size,
                               circle_path(n, FPS, 0.5 * strength, rng.uniform(0, 2 * np.pi)))
        pitch = PITCH[emotion] * (1 + 0.03 * rng.normal())
        audio = tone_track(np.full(n, pitch), FPS, SAMPLE_RATE, 0.35 * strength, rng)
        write_audio(out / "AudioWAV" / f"{stem}.wav", audio, SAMPLE_RATE)
        write_video(out / "VideoFlash" / f"{stem}.flv", frames, FPS, audio=audio,
                    sample_rate=SAMPLE_RATE)
    return SampleInfo(
        layout="cremad", root=str(out), clips=n_clips, seconds=options.seconds,
        seed=options.seed, size=options.size,
        signal="emotion -> colour and pitch; intensity -> brightness, loudness, marker speed",
        details={"actors": n_actors})
