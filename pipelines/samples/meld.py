"""A small MELD copy: the three *_sent_emo.csv files and the MELD.Raw clip folders.

Planted signal: the utterance's emotion sets the frame colour, the voice's pitch and a word in
the utterance text. Dialogues of three utterances; speakers are the six friends.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..datasets.meld import CLASSES, CLIP_FOLDERS
from ..synthetic.av_writer import write_video
from .base import SampleInfo, SampleOptions, hue_colour, render_frames, split_sizes, tone_track

FPS = 24
SAMPLE_RATE = 16000
DEFAULTS = {"clips": 21, "seconds": 2.0, "size": 64}
SPEAKERS = ["Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross"]
WORDS = {"anger": "furious", "disgust": "gross", "sadness": "miserable", "joy": "wonderful",
         "neutral": "okay", "surprise": "unbelievable", "fear": "terrified"}
SENTIMENT = {"anger": "negative", "disgust": "negative", "sadness": "negative", "fear": "negative",
             "joy": "positive", "surprise": "positive", "neutral": "neutral"}
HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
          "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]
PER_DIALOGUE = 3


def _stamp(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def generate(out: Path, options: SampleOptions) -> SampleInfo:
    rng = np.random.default_rng(options.seed)
    sizes = split_sizes(max(options.clips, 3), (0.6, 0.2, 0.2))
    n = max(2, int(round(options.seconds * FPS)))
    index = 0
    for meld_split, count in zip(("train", "dev", "test"), sizes):
        folder = out / CLIP_FOLDERS[meld_split][0]
        rows = []
        for k in range(count):
            emotion = CLASSES[index % len(CLASSES)]
            dia, utt = k // PER_DIALOGUE, k % PER_DIALOGUE
            start = 60.0 + 10 * dia + utt * (options.seconds + 0.5)
            colour = hue_colour(CLASSES.index(emotion) / len(CLASSES))
            frames = render_frames(np.tile(colour, (n, 1)), options.size)
            pitch = 180.0 * 2.0 ** (CLASSES.index(emotion) / 4)
            audio = tone_track(np.full(n, pitch), FPS, SAMPLE_RATE, 0.3, rng)
            write_video(folder / f"dia{dia}_utt{utt}.mp4", frames, FPS, audio=audio,
                        sample_rate=SAMPLE_RATE)
            rows.append([k + 1, f"Honestly, I feel {WORDS[emotion]} about this.",
                         SPEAKERS[index % len(SPEAKERS)], emotion, SENTIMENT[emotion], dia, utt,
                         1 + dia % 10, 1 + dia % 24, _stamp(start),
                         _stamp(start + options.seconds)])
            index += 1
        with open(out / f"{meld_split}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            writer.writerows(rows)
    return SampleInfo(
        layout="meld", root=str(out), clips=index, seconds=options.seconds, seed=options.seed,
        size=options.size, signal="emotion -> colour, pitch and an emotion word in the text",
        details={"clips_per_split": dict(zip(("train", "dev", "test"), sizes))})
