"""REACT: a generated copy of the challenge layout goes through the real adapter into a store.

Story: a researcher points `affect ingest --dataset react` at the REACT folder; every person-clip
of the split csvs becomes a clip with 25-d reactions at 25 fps and its 3DMM, each split's
appropriateness matrix lands in the store, and broken files are skipped and listed, never fatal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from features_store import open_store, verify
from pipelines.datasets import get_adapter
from pipelines.ingest import ingest
from pipelines.samples import generate_sample

SECONDS = 2.0
FRAMES = int(SECONDS * 25)


@pytest.fixture(scope="module")
def react_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("react") / "REACT"
    # 5 dyads: train 3, val 1, test 1 -> 10 person-clips.
    generate_sample("react", root, clips=10, seconds=SECONDS, seed=3, size=32)
    return root


def test_sample_ingests_with_reactions_3dmm_and_neighbours(react_root, tmp_path):
    store = open_store(str(tmp_path / "react.zarr"), dataset="react")
    report = ingest(get_adapter("react"), react_root, store)

    assert report.problems == []
    assert report.clips_per_split == {"train": 6, "val": 2, "test": 2}
    clips = store.clips()
    assert len(clips) == 10
    ids = [c["clip_id"] for c in clips]
    # Clip ids are the split-csv paths, so an export rebuilds the baseline tree.
    assert any(i.startswith("NoXI/") and "/Expert_video/" in i for i in ids)
    assert any(i.startswith("UDIVA/talk/") and len(i.split("/")) == 5 for i in ids)
    by_id = {c["clip_id"]: c for c in clips}
    for clip in clips:
        assert Path(clip.get("video") or clip["frames"]).exists()
        assert clip["audio"].endswith(".wav")
        assert clip["partner"] in by_id and by_id[clip["partner"]]["partner"] == clip["clip_id"]
    # The val speaker is a frame folder (51 PNGs for 50 label rows), read as a clip all the same.
    assert sum("frames" in c for c in clips) == 1

    emotion = store.resolve("react-emotion")
    assert emotion.kind == "label" and emotion.frame_shift_s == pytest.approx(0.04)
    shapes = store.shape_manifest("react-emotion")
    assert {s.shape for s in shapes} == {(FRAMES, 25)}
    assert [s.t_end for s in shapes] == pytest.approx([SECONDS] * 10)
    assert {s.shape for s in store.shape_manifest("react-3dmm")} == {(FRAMES, 58)}
    values = store.read_clip("react-emotion", ids[0])
    assert set(np.unique(values[:, :15])) <= {0.0, 1.0}  # AU occurrences
    assert np.allclose(values[:, 17:].sum(axis=1), 1.0, atol=1e-3)  # expression probabilities

    for split, dyads in (("train", 3), ("val", 1), ("test", 1)):
        matrix, attrs = store.get_aux(f"react/neighbours/{split}")
        assert matrix.shape == (2 * dyads, 2 * dyads) and matrix.dtype == bool
        assert matrix.diagonal().all()  # the real partner is always appropriate
        speakers, listeners = attrs["clip_ids"], attrs["listener_ids"]
        assert speakers[dyads:] == listeners[:dyads]  # [speakers..., listeners...]
        assert all(by_id[s]["split"] == split for s in speakers)
    train, _ = store.get_aux("react/neighbours/train")
    assert train.sum() > 6  # plus a few other appropriate reactions

    assert verify(store).ok


def test_rerun_is_idempotent(react_root, tmp_path):
    store = open_store(str(tmp_path / "react.h5"), dataset="react")  # the HDF5 backend too
    ingest(get_adapter("react"), react_root, store)
    parts = store.committed_parts("react-emotion")
    again = ingest(get_adapter("react"), react_root, store)
    assert again.written == {"react-emotion": 0, "react-3dmm": 0}
    assert store.committed_parts("react-emotion") == parts
    assert len(store.clips()) == 10 and store.failures() == []
    assert verify(store).ok


def test_listener_reaction_follows_the_speaker_video(react_root):
    """The planted signal survives encoding: the speaker's red level predicts the listener's
    valence 5 frames later (correlation near 1), so a head has something to learn."""
    result = get_adapter("react").scan(react_root)
    clip = next(c for c in result.clips if c["split"] == "train" and "video" in c)
    with av.open(clip["video"]) as container:
        red = np.array([f.to_ndarray(format="rgb24")[..., 0].mean()
                        for f in container.decode(video=0)])
    valence = result.labels["react-emotion"].rows[clip["partner"]].values[:, 15]
    lag = 5
    r = np.corrcoef(red[: FRAMES - lag], valence[lag:])[0, 1]
    assert r > 0.9


def _truncate(path: Path, keep_lines: int) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:keep_lines]) + "\n")


def test_broken_inputs_are_skipped_and_listed(react_root, tmp_path):
    root = tmp_path / "REACT"
    shutil.copytree(react_root, root)
    train_rows = (root / "train.csv").read_text().splitlines()
    speaker0, listener0 = train_rows[1].split(",")[1:]
    speaker1 = train_rows[2].split(",")[1]
    # 1. a malformed csv row (one field missing)
    with open(root / "train.csv", "a") as f:
        f.write("3,NoXI/999_missing/Expert_video/1\n")
    # 2. a missing media file
    (root / "train" / "Audio_files" / f"{speaker0}.wav").unlink()
    # 3. labels shorter than the video
    emotion_csvs = sorted((root / "train" / "Emotion").rglob("*.csv"))
    emotion = next(p for p in emotion_csvs if p.stem == speaker1.split("/")[-1]
                   and p.parent.parent.name == speaker1.split("/")[-3])
    _truncate(emotion, FRAMES - 10)
    # 4. an empty split
    (root / "val.csv").write_text(",speaker_path,listener_path\n")

    store = open_store(str(tmp_path / "broken.zarr"), dataset="react")
    report = ingest(get_adapter("react"), root, store)

    messages = [f["message"] for f in store.failures()]
    assert all(f["stage"] == "ingest" for f in store.failures())
    assert any("train.csv: line 5: expected 3 fields, got 2" in m for m in messages)
    assert any(f"{speaker0}.wav: missing audio" in m for m in messages)
    assert any(emotion.name in m and f"{FRAMES - 11} label frames" in m for m in messages)
    assert any("val.csv" in m and "empty split" in m for m in messages)
    assert len(messages) == 4 and all("\n" not in m for m in messages)
    failed = {f.get("clip_id") for f in store.failures()}
    assert speaker0 in failed and speaker1 in failed

    # The rest is ingested: train keeps its one intact dyad, test is untouched, val is empty.
    assert report.clips_per_split == {"train": 4, "test": 2}
    assert speaker0 not in store.clip_ids() and listener0 in store.clip_ids()
    matrix, attrs = store.get_aux("react/neighbours/train")
    assert matrix.shape == (2, 2) and speaker0 not in attrs["clip_ids"]
    assert verify(store).ok
    # Rerunning lists nothing twice.
    ingest(get_adapter("react"), root, store)
    assert len(store.failures()) == 4


def test_one_table_of_react_2024_emotion_renames_serves_ingest_and_metrics():
    import pipelines.react_eval as react_eval
    from pipelines.datasets import react
    from pipelines.datasets.react_paths import path_variants

    # the dataset adapter and the metrics command ask the same function
    assert react.path_variants is path_variants is react_eval.path_variants
    assert path_variants("NoXI/010_2016-03-25_Paris/Expert_video/3") == [
        "NoXI/010_2016-03-25_Paris/Expert_video/3", "NoXI/010_2016-03-25_Paris/P1/3"]
    for old, new in (("P25", "P1"), ("P26", "P2"), ("P41", "P1"), ("P42", "P2"),
                     ("P45", "P1"), ("P46", "P2")):
        assert path_variants(f"RECOLA/group-1/{old}/2") == [
            f"RECOLA/group-1/{old}/2", f"RECOLA/group-1/{new}/2"]
    # a 2024 name is looked up under every 2023 name it may have had
    assert path_variants("RECOLA/group-2/P2/4")[1:] == [
        "RECOLA/group-2/P26/4", "RECOLA/group-2/P42/4", "RECOLA/group-2/P46/4"]
    # names outside the official table keep theirs; UDIVA is never renamed
    assert path_variants("RECOLA/group-1/P27/2") == ["RECOLA/group-1/P27/2"]
    assert path_variants("UDIVA/talk/023102/FC1/1") == ["UDIVA/talk/023102/FC1/1"]
