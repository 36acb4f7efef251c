"""A small REACT copy: dyads of NoXI, RECOLA and UDIVA clips in the challenge's own layout.

Planted signal: each person has a slowly varying latent s(t) that drives their own video (red
level and the marker's height) and voice (pitch). A person's reaction attributes (the Emotion
csv) follow their partner's latent 0.2 s earlier, so a listener's reaction is predictable from
the speaker's video and audio. The 3DMM coefficients are a fixed linear map of the reaction.

The train split names its emotion files the 2024 way (NoXI P1/P2, RECOLA P1/P2), val and test
the 2023 way; the first clip of the val split is a frame folder (T + 1 PNGs for T label rows,
as the real folders hold 751 frames for 750 rows). A clip's label length is seconds * 25; the
real data has 30 s = 750 frames.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..datasets.react import EMOTION_COLUMNS, N_3DMM, path_variants
from ..synthetic.av_writer import write_audio, write_frame_folder, write_video
from .base import SampleInfo, SampleOptions, render_frames, smooth_signal, split_sizes, tone_track

FPS = 25
SAMPLE_RATE = 44100
LAG_FRAMES = 5
DEFAULTS = {"clips": 12, "seconds": 30.0, "size": 64}
SITES = ("NoXI", "RECOLA", "UDIVA")


def _dyad(site: str, i: int, clip: int) -> tuple[str, str]:
    if site == "NoXI":
        group = f"{10 + i:03d}_2016-03-25_Paris"
        return (f"NoXI/{group}/Expert_video/{clip}", f"NoXI/{group}/Novice_video/{clip}")
    if site == "RECOLA":
        first = (25, 41, 45)[i % 3]  # REACT's RECOLA dyads (P25/P26, P41/P42, P45/P46)
        group = f"RECOLA/group-{i + 1}"
        return (f"{group}/P{first}/{clip}", f"{group}/P{first + 1}/{clip}")
    session = f"{23102 + i:06d}"
    return (f"UDIVA/talk/{session}/FC1/{clip}", f"UDIVA/talk/{session}/FC2/{clip}")


def reaction_from_latent(u: np.ndarray) -> np.ndarray:
    """[T, 25] attributes from a driving signal u in [-1, 1]: AUs switch on at staggered levels,
    valence/arousal follow u, expression probabilities are a softmax that shifts with u."""
    thresholds = np.linspace(-0.7, 0.7, 15)
    aus = (u[:, None] > thresholds[None, :]).astype(np.float32)
    valence = 0.8 * u
    arousal = 0.9 * np.abs(u) - 0.3
    centres = np.linspace(-1.0, 1.0, 8)
    logits = -4.0 * (u[:, None] - centres[None, :]) ** 2
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return np.concatenate([aus, valence[:, None], arousal[:, None], probs], axis=1).astype(
        np.float32)


def appropriateness(reactions: list[np.ndarray], extra: int = 1) -> np.ndarray:
    """[2L, 2L] bool: each sample's own listener plus its `extra` most similar other reactions."""
    n = len(reactions)
    flat = np.stack([r.reshape(-1) for r in reactions])
    dist = ((flat[:, None, :] - flat[None, :, :]) ** 2).mean(axis=2)
    matrix = np.eye(n, dtype=bool)
    for k in range(n):
        order = [j for j in np.argsort(dist[k]) if j != k]
        matrix[k, order[:extra]] = True
    return matrix | matrix.T


def generate(out: Path, options: SampleOptions) -> SampleInfo:
    rng = np.random.default_rng(options.seed)
    n_frames = int(round(options.seconds * FPS))
    n_rows = max(3, options.clips // 2)
    projection = rng.normal(0, 0.3, size=(25, N_3DMM)).astype(np.float32)
    clip_counter = 0
    row_index = 0
    details: dict[str, int] = {}
    for split, rows in zip(("train", "val", "test"), split_sizes(n_rows, (0.6, 0.2, 0.2))):
        base = out / split
        dyads, reactions_spk, reactions_lis = [], [], []
        for r in range(rows):
            site = SITES[row_index % len(SITES)]
            clip_counter += 1
            speaker, listener = _dyad(site, row_index, clip_counter)
            row_index += 1
            latent = {p: smooth_signal(rng, n_frames + LAG_FRAMES, FPS)
                      for p in (speaker, listener)}
            for person, partner in ((speaker, listener), (listener, speaker)):
                own = latent[person][LAG_FRAMES:]
                driven = latent[partner][:n_frames]  # the partner's signal LAG_FRAMES earlier
                reaction = reaction_from_latent(driven)
                as_frame_folder = split == "val" and r == 0 and person == speaker
                _write_person(base, person, own, reaction, projection, options, rng,
                              use_2024_names=(split == "train"), frame_folder=as_frame_folder)
                (reactions_lis if person == listener else reactions_spk).append(reaction)
            dyads.append((speaker, listener))
        _write_split_csv(out / f"{split}.csv", dyads)
        # Sample i < L: speaker i -> listener i's reaction; sample L + i: the reverse.
        matrix = appropriateness(reactions_lis + reactions_spk)
        np.save(out / f"neighbour_emotion_{split}.npy", matrix)
        details[split] = 2 * rows
    return SampleInfo(
        layout="react", root=str(out), clips=2 * n_rows, seconds=options.seconds,
        seed=options.seed, size=options.size,
        signal="listener reaction attributes follow the speaker's latent (red level, marker "
               f"height, voice pitch) {LAG_FRAMES / FPS:.1f} s earlier",
        details={"clips_per_split": details, "label_frames_per_clip": n_frames,
                 "fps": FPS})


def _write_person(base: Path, person: str, own: np.ndarray, reaction: np.ndarray,
                  projection: np.ndarray, options: SampleOptions, rng: np.random.Generator,
                  use_2024_names: bool, frame_folder: bool) -> None:
    n = len(own)
    colours = np.stack([0.5 + 0.4 * own, 0.5 - 0.2 * own, np.full(n, 0.4)], axis=1)
    marker = np.stack([np.linspace(-0.8, 0.8, n), own], axis=1)
    frames = render_frames(colours, options.size, marker)
    video_base = base / "Video_files" / person
    if frame_folder:
        write_frame_folder(video_base, np.concatenate([frames, frames[-1:]]), ext="png")
    else:
        write_video(video_base.with_name(video_base.name + ".mp4"), frames, FPS)
    audio = tone_track(220.0 * 2.0 ** own, FPS, SAMPLE_RATE, 0.3, rng)
    write_audio(base / "Audio_files" / f"{person}.wav", audio, SAMPLE_RATE)
    names = path_variants(person)
    emotion_name = names[-1] if use_2024_names else names[0]
    emotion_path = base / "Emotion" / f"{emotion_name}.csv"
    emotion_path.parent.mkdir(parents=True, exist_ok=True)
    with open(emotion_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(EMOTION_COLUMNS)
        writer.writerows([[f"{v:.4f}" for v in row] for row in reaction])
    coeffs = reaction @ projection + rng.normal(0, 0.01, size=(n, N_3DMM)).astype(np.float32)
    threedmm = base / "3D_FV_files" / f"{person}.npy"
    threedmm.parent.mkdir(parents=True, exist_ok=True)
    np.save(threedmm, coeffs.astype(np.float32))


def _write_split_csv(path: Path, dyads: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "speaker_path", "listener_path"])
        for i, (speaker, listener) in enumerate(dyads):
            writer.writerow([i, speaker, listener])
