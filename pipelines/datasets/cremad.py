"""CREMA-D: acted emotional sentences; labels from file names, circumplex valence/arousal targets.

Layout as distributed::

    <root>/AudioWAV/<Actor>_<Sentence>_<Emotion>_<Intensity>.wav
    <root>/VideoFlash/<same stem>.flv

Clip id = the stem (`1001_DFA_ANG_XX`). The split is speaker independent, as the released
Affective-TRM code makes it (`src/data/dataset.py`): actors in the order of their sorted file
names, shuffled with `np.random.RandomState(42)`, then 80/10/10 (floor for train and val, the
rest test).

Valence/arousal targets (the Affective-TRM recipe): the emotion's circumplex centre times the
intensity scale, plus Gaussian noise, clipped to [-1, 1]. The noise and the XX intensity draw come
from a generator seeded by (42, crc32(clip_id)), so each clip's target is reproducible and does
not depend on which other files are present or in what order they were listed.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    Adapter,
    LabelStream,
    Recipe,
    ScanResult,
    SkipClip,
    display_path,
)
from .files import list_dir, wav_duration

SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
EMOTION_NAMES = ["anger", "disgust", "fear", "happy", "neutral", "sad"]
INTENSITIES = ["LO", "MD", "HI", "XX"]
# Circumplex centres (valence, arousal) and intensity scales of the Affective-TRM recipe.
CIRCUMPLEX = {"ANG": (-0.6, 0.7), "DIS": (-0.7, 0.3), "FEA": (-0.3, 0.8), "HAP": (0.7, 0.6),
              "SAD": (-0.7, -0.5), "NEU": (0.0, 0.0)}
INTENSITY_SCALE = {"LO": 0.6, "MD": 1.0, "HI": 1.2}
XX_SCALE_RANGE = (0.7, 1.2)
NOISE_SIGMA = {"NEU": 0.08}
DEFAULT_NOISE_SIGMA = 0.15
SPLIT_SEED = 42
LABEL_SEED = 42
SPLIT_FRACTIONS = (0.8, 0.1)


def circumplex_target(clip_id: str, emotion: str, intensity: str, seed: int = LABEL_SEED
                      ) -> np.ndarray:
    """[2] valence, arousal for one clip, reproducible from its id."""
    rng = np.random.default_rng([seed, zlib.crc32(clip_id.encode("utf-8"))])
    scale = (rng.uniform(*XX_SCALE_RANGE) if intensity == "XX" else INTENSITY_SCALE[intensity])
    centre = np.asarray(CIRCUMPLEX[emotion], dtype=np.float64) * scale
    sigma = NOISE_SIGMA.get(emotion, DEFAULT_NOISE_SIGMA)
    return np.clip(centre + rng.normal(0.0, sigma, size=2), -1.0, 1.0).astype(np.float32)


def shuffled_actors(actors: list[str], seed: int = SPLIT_SEED) -> list[str]:
    """The actors sorted, then shuffled with `np.random.RandomState(seed)` (the released code's
    generator: another one gives another order)."""
    order = sorted(actors, key=lambda a: (len(a), a))
    np.random.RandomState(seed).shuffle(order)
    return order


def actor_splits(actors: list[str], seed: int = SPLIT_SEED) -> dict[str, str]:
    """Actor -> split: the shuffled actors (`shuffled_actors`) cut 80/10/10."""
    order = shuffled_actors(actors, seed)
    n_train = int(len(order) * SPLIT_FRACTIONS[0])
    n_val = int(len(order) * SPLIT_FRACTIONS[1])
    splits = {}
    for i, actor in enumerate(order):
        splits[actor] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return splits


def parse_stem(stem: str, where: str) -> tuple[str, str, str, str]:
    parts = stem.split("_")
    if len(parts) != 4:
        raise SkipClip(f"{where}: name is not Actor_Sentence_Emotion_Intensity")
    actor, sentence, emotion, intensity = parts
    if not actor.isdigit():
        raise SkipClip(f"{where}: actor {actor!r} is not a number")
    if sentence not in SENTENCES:
        raise SkipClip(f"{where}: unknown sentence code {sentence!r}")
    if emotion not in EMOTIONS:
        raise SkipClip(f"{where}: unknown emotion code {emotion!r} (expected one of "
                       f"{' '.join(EMOTIONS)})")
    if intensity not in INTENSITIES:
        raise SkipClip(f"{where}: unknown intensity code {intensity!r}")
    return actor, sentence, emotion, intensity


class CremaDAdapter(Adapter):
    name = "cremad"
    title = "CREMA-D acted emotions (6 classes, circumplex valence/arousal)"
    reads = (
        "AudioWAV/<Actor>_<Sentence>_<Emotion>_<Intensity>.wav",
        "VideoFlash/<same>.flv",
        "labels, actor and sentence text from the file name",
    )
    recipe = Recipe(
        encoders=["dasheng-base", "hsemotion-enet-b0", "embeddinggemma"],
        # the released Affective-TRM encodes MTCNN face crops, not whole frames (the trm head's
        # paper profile; `--encoder-option`-free runs get it by default)
        encoder_options={"hsemotion-enet-b0": {"face_crop": "mtcnn"}},
        default_head="trm",
        labels=["cremad-va", "cremad-emotion"],
        fps=25.0,
        notes="Speaker-independent split (actors shuffled with np.random.RandomState(42), "
              "80/10/10, as the released code). Targets: circumplex centre x intensity + seeded "
              "noise. HSEmotion on MTCNN face crops (face_crop=mtcnn), as the released code.",
    )

    def scan(self, data_root: str | Path) -> ScanResult:
        from features_store.errors import UserError

        root, result, out = self._begin_scan(data_root)
        out.stream(LabelStream(alias="cremad-emotion", dim=1, dtype="int64", classes=EMOTION_NAMES,
                               description="emotion class id per clip (ANG DIS FEA HAP NEU SAD)",
                               preprocessing={"source": "file name"}))
        out.stream(LabelStream(
            alias="cremad-va", dim=2, columns=["valence", "arousal"],
            description="circumplex valence/arousal target per clip",
            preprocessing={"centres": CIRCUMPLEX, "intensity_scale": INTENSITY_SCALE,
                           "xx_scale": list(XX_SCALE_RANGE), "noise_sigma": NOISE_SIGMA,
                           "default_noise_sigma": DEFAULT_NOISE_SIGMA, "seed": LABEL_SEED,
                           "clip": [-1, 1]}))
        audio_dir, video_dir = root / "AudioWAV", root / "VideoFlash"
        if not audio_dir.is_dir() and not video_dir.is_dir():
            raise UserError(f"{root}: no AudioWAV or VideoFlash folder: not a CREMA-D root")
        wavs = {n[:-4]: audio_dir / n for n in list_dir(audio_dir, out) if n.endswith(".wav")}
        flvs = {n[:-4]: video_dir / n for n in list_dir(video_dir, out) if n.endswith(".flv")}
        parsed: dict[str, tuple[str, str, str, str]] = {}
        for stem in sorted(set(wavs) | set(flvs)):
            where = display_path(wavs.get(stem) or flvs[stem])
            try:
                parsed[stem] = parse_stem(stem, where)
                if stem not in wavs:
                    raise SkipClip(f"{display_path(audio_dir / stem)}.wav: missing audio "
                                   f"(the video {where} has no AudioWAV file)")
                if stem not in flvs:
                    raise SkipClip(f"{display_path(video_dir / stem)}.flv: missing video "
                                   f"(the audio {where} has no VideoFlash file)")
            except SkipClip as exc:
                parsed.pop(stem, None)
                out.problem(str(exc), clip_id=stem)
        actors = sorted({p[0] for p in parsed.values()})
        splits = actor_splits(actors)
        # the released loaders list a split's clips actor by actor in the shuffled order (file
        # order within an actor): the TRM head batches its evaluation that way
        rank = {actor: i for i, actor in enumerate(shuffled_actors(actors))}
        for stem, (actor, sentence, emotion, intensity) in parsed.items():
            clip = self._record(stem, actor, sentence, emotion, intensity, splits[actor],
                                wavs[stem], flvs[stem])
            clip["actor_rank"] = rank[actor]
            out.add(clip, {"cremad-emotion": [EMOTIONS.index(emotion)],
                           "cremad-va": circumplex_target(stem, emotion, intensity)})
        counts = result.clips_per_split()
        for split in ("train", "val", "test"):
            if parsed and not counts.get(split):
                out.problem(f"{display_path(root)}: split {split!r} has no clips (empty split: "
                            f"{len(splits)} actors are too few for 80/10/10)", file=root)
        return result

    def _record(self, stem: str, actor: str, sentence: str, emotion: str, intensity: str,
                split: str, wav: Path, flv: Path) -> dict[str, Any]:
        return {
            "clip_id": stem,
            "split": split,
            "dataset": self.name,
            "video": str(flv.resolve()),
            "audio": str(wav.resolve()),
            "source": str(flv.resolve()),
            "duration": wav_duration(wav),
            "text": SENTENCES[sentence],
            "speaker": actor,
            "actor": actor,
            "sentence": sentence,
            "emotion": emotion,
            "intensity": intensity,
        }
