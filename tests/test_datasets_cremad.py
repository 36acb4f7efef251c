"""CREMA-D: labels from file names, a speaker-independent split and circumplex VA targets.

Story: the adapter reads AudioWAV/VideoFlash pairs, splits by actor (seed 42, 80/10/10) so no
actor is in two splits, stores the emotion class and a reproducible valence/arousal target per
clip, and skips (and lists) files with unknown codes, missing halves or undecodable names.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from features_store import open_store, verify
from pipelines.datasets import get_adapter
from pipelines.datasets.cremad import (
    CIRCUMPLEX,
    EMOTIONS,
    actor_splits,
    circumplex_target,
    shuffled_actors,
)
from pipelines.ingest import ingest
from pipelines.samples import generate_sample


@pytest.fixture(scope="module")
def crema_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cremad") / "CREMA-D"
    generate_sample("cremad", root, clips=20, seconds=0.5, seed=4, size=32)
    return root


def test_sample_ingests_with_a_speaker_independent_split(crema_root, tmp_path):
    store = open_store(str(tmp_path / "crema.zarr"), dataset="cremad")
    report = ingest(get_adapter("cremad"), crema_root, store)
    assert report.problems == []
    clips = store.clips()
    assert len(clips) == 20
    actors_of = {s: {c["actor"] for c in store.clips(s)} for s in ("train", "val", "test")}
    assert [len(actors_of[s]) for s in ("train", "val", "test")] == [8, 1, 1]  # 10 actors
    assert not (actors_of["train"] & actors_of["val"] or actors_of["train"] & actors_of["test"]
                or actors_of["val"] & actors_of["test"])
    # the actor's place in the released shuffled list: how the released loaders order clips
    order = shuffled_actors(sorted({c["actor"] for c in clips}))
    assert all(c["actor_rank"] == order.index(c["actor"]) for c in clips)
    for clip in clips:
        actor, sentence, emotion, level = clip["clip_id"].split("_")
        assert (clip["speaker"], clip["emotion"], clip["intensity"]) == (actor, emotion, level)
        assert clip["text"] and clip["video"].endswith(".flv") and clip["audio"].endswith(".wav")
        assert clip["duration"] == pytest.approx(0.5, abs=0.05)
        assert store.read_clip("cremad-emotion", clip["clip_id"]).tolist() == [
            [EMOTIONS.index(emotion)]]
        va = store.read_clip("cremad-va", clip["clip_id"])
        assert va.shape == (1, 2) and (np.abs(va) <= 1).all()
        centre = np.asarray(CIRCUMPLEX[emotion]) * {"LO": 0.6, "MD": 1.0, "HI": 1.2}.get(level, 1)
        assert np.abs(va[0] - np.clip(centre, -1, 1)).max() < 0.7
    assert verify(store).ok


def test_split_and_targets_are_reproducible():
    actors = [str(a) for a in range(1001, 1092)]  # the real 91 actors
    splits = actor_splits(actors)
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 72, "val": 9, "test": 10}
    assert actor_splits(list(reversed(actors))) == splits  # order of listing does not matter
    a = circumplex_target("1001_DFA_ANG_XX", "ANG", "XX")
    assert np.array_equal(a, circumplex_target("1001_DFA_ANG_XX", "ANG", "XX"))
    assert not np.array_equal(a, circumplex_target("1002_DFA_ANG_XX", "ANG", "XX"))
    # NEU noise is smaller (sigma 0.08) and centred on (0, 0).
    neutral = np.stack([circumplex_target(f"{i}_IEO_NEU_XX", "NEU", "XX") for i in range(400)])
    assert np.abs(neutral.mean(axis=0)).max() < 0.02
    assert neutral.std(axis=0) == pytest.approx([0.08, 0.08], abs=0.015)


def test_broken_files_are_skipped_and_listed(crema_root, tmp_path):
    root = tmp_path / "CREMA-D"
    shutil.copytree(crema_root, root)
    wavs = sorted((root / "AudioWAV").iterdir())
    # an unknown emotion code (both halves present)
    stem = wavs[0].stem
    bad = stem.rsplit("_", 2)[0] + "_XYZ_HI"
    shutil.copy(wavs[0], root / "AudioWAV" / f"{bad}.wav")
    shutil.copy(root / "VideoFlash" / f"{stem}.flv", root / "VideoFlash" / f"{bad}.flv")
    # a missing media file
    (root / "VideoFlash" / f"{wavs[1].stem}.flv").unlink()
    # a path that is not UTF-8
    with open(os.fsencode(root / "AudioWAV") + b"/1001_DFA_ANG_\xe9.wav", "wb") as f:
        f.write(wavs[2].read_bytes())

    store = open_store(str(tmp_path / "crema.zarr"), dataset="cremad")
    report = ingest(get_adapter("cremad"), root, store)
    messages = [f["message"] for f in store.failures()]
    assert len(messages) == 3
    assert any(f"{bad}.wav: unknown emotion code 'XYZ'" in m for m in messages)
    assert any(f"{wavs[1].stem}.flv: missing video" in m for m in messages)
    assert any("1001_DFA_ANG_\ufffd.wav: file name is not valid UTF-8" in m for m in messages)
    assert report.clips == 19 and wavs[1].stem not in store.clip_ids()
    assert verify(store).ok


def test_split_picks_the_released_codes_validation_and_test_actors():
    """The released `create_dataloaders` shuffles the actor list (ascending, as its sorted file
    names list them) with np.random.RandomState(42) and cuts 80/10/10: these 9 validation and
    10 test actors (random.Random(42) picks others)."""
    actors = [str(a) for a in range(1001, 1092)]
    splits = actor_splits(actors)
    val = sorted(int(a) for a, s in splits.items() if s == "val")
    test = sorted(int(a) for a, s in splits.items() if s == "test")
    assert val == [1002, 1022, 1030, 1038, 1053, 1060, 1064, 1079, 1087]
    assert test == [1003, 1015, 1021, 1024, 1052, 1061, 1072, 1075, 1083, 1085]
    released = list(range(1001, 1092))  # the released code, written out
    np.random.RandomState(42).shuffle(released)
    assert [int(a) for a in sorted(actors, key=lambda a: released.index(int(a)))] == released
    assert [splits[str(a)] for a in released] == ["train"] * 72 + ["val"] * 9 + ["test"] * 10
