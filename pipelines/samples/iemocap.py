"""A small IEMOCAP copy: five sessions, one dialogue each, with DivX avi, transcriptions and
EmoEvaluation files in the release's formats.

Planted signal: during each utterance the frame takes the emotion's colour and the voice the
emotion's pitch, and the transcript carries an emotion word; between utterances the frame is
grey and silent. Session 1's dialogue ends with one `xxx` utterance (no agreement), which the
adapter leaves out on purpose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..datasets.iemocap import CLASSES
from ..synthetic.av_writer import write_video
from .base import SampleInfo, SampleOptions, hue_colour, render_frames, tone_track

FPS = 30
SAMPLE_RATE = 16000
DEFAULTS = {"clips": 30, "seconds": 2.0, "size": 64}
GAP_S = 0.3
WORDS = {"hap": "happy", "sad": "sad", "neu": "fine", "ang": "angry", "exc": "thrilled",
         "fru": "annoyed", "xxx": "hmm"}
VAD = {"hap": (4.0, 3.5, 3.0), "sad": (1.5, 2.0, 2.0), "neu": (3.0, 2.5, 2.5),
       "ang": (1.5, 4.0, 4.0), "exc": (4.5, 4.5, 3.5), "fru": (2.0, 3.5, 3.0),
       "xxx": (3.0, 3.0, 3.0)}
EVALUATOR_WORD = {"hap": "Happiness", "sad": "Sadness", "neu": "Neutral state", "ang": "Anger",
                  "exc": "Excited", "fru": "Frustration", "xxx": "Other"}


def generate(out: Path, options: SampleOptions) -> SampleInfo:
    rng = np.random.default_rng(options.seed)
    per_dialog = max(2, options.clips // 5)
    index = 0
    total = 0
    for session in range(1, 6):
        dialog = f"Ses{session:02d}F_impro01"
        codes = [CLASSES[(index + k) % len(CLASSES)] for k in range(per_dialog)]
        index += per_dialog
        if session == 1:
            codes.append("xxx")
        _write_dialog(out / f"Session{session}" / "dialog", dialog, codes, options, rng)
        total += per_dialog
    return SampleInfo(
        layout="iemocap", root=str(out), clips=total, seconds=options.seconds, seed=options.seed,
        size=options.size,
        signal="emotion -> colour and pitch during the utterance, an emotion word in the text",
        details={"utterances_per_dialog": per_dialog, "excluded_xxx": 1})


def _write_dialog(folder: Path, dialog: str, codes: list[str], options: SampleOptions,
                  rng: np.random.Generator) -> None:
    seconds = options.seconds
    spans = [(GAP_S + k * (seconds + GAP_S), GAP_S + k * (seconds + GAP_S) + seconds)
             for k in range(len(codes))]
    n = int(round((spans[-1][1] + GAP_S) * FPS))
    times = np.arange(n) / FPS
    colours = np.tile(np.array([0.4, 0.4, 0.4], np.float32), (n, 1))
    pitch = np.full(n, 100.0)
    loud = np.full(n, 0.02)
    for code, (start, end) in zip(codes, spans):
        inside = (times >= start) & (times < end)
        hue = CLASSES.index(code) / len(CLASSES) if code in CLASSES else 0.95
        colours[inside] = hue_colour(hue)
        pitch[inside] = 170.0 * 2.0 ** (CLASSES.index(code) / 3 if code in CLASSES else 0.1)
        loud[inside] = 0.3
    frames = render_frames(colours, options.size)
    audio = tone_track(pitch, FPS, SAMPLE_RATE, loud, rng)
    write_video(folder / "avi" / "DivX" / f"{dialog}.avi", frames, FPS, audio=audio,
                sample_rate=SAMPLE_RATE, codec="mpeg4")
    turns = {"F": 0, "M": 0}
    transcript, evaluation = [], ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for k, (code, (start, end)) in enumerate(zip(codes, spans)):
        gender = "F" if k % 2 == 0 else "M"
        utt = f"{dialog}_{gender}{turns[gender]:03d}"
        turns[gender] += 1
        transcript.append(f"{utt} [{start:08.4f}-{end:08.4f}]: I am {WORDS[code]} right now.")
        v, a, d = VAD[code]
        evaluation += [f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]",
                       f"C-E1:\t{EVALUATOR_WORD[code]};\t()",
                       f"A-E1:\tval {round(v)}; act {round(a)}; dom  {round(d)};\t()", ""]
    for sub, lines in (("transcriptions", transcript), ("EmoEvaluation", evaluation)):
        path = folder / sub / f"{dialog}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
