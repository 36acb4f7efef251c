"""Aff-Wild2: per-frame valence/arousal at each video's real frame rate, two people per video
where there are two, -5 kept as the invalid marker.

Story: the ABAW folders hold raw videos in batch folders and one label txt per annotated person;
the adapter pairs them, reads each video's own rate, checks the label length against the video
and stores [T, 2] labels; a label file that disagrees with its video is skipped and listed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from features_store import open_store, verify
from pipelines.datasets import get_adapter
from pipelines.ingest import ingest
from pipelines.samples import generate_sample

SECONDS = 1.5


@pytest.fixture(scope="module")
def affwild_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("affwild2") / "Aff-Wild2"
    generate_sample("affwild2", root, clips=6, seconds=SECONDS, seed=2, size=32)
    return root


def test_sample_ingests_at_the_real_frame_rate(affwild_root, tmp_path):
    store = open_store(str(tmp_path / "aw.zarr"), dataset="affwild2")
    report = ingest(get_adapter("affwild2"), affwild_root, store)
    assert report.problems == []
    assert report.clips_per_split == {"train": 4, "val": 1, "test": 1}
    clips = {c["clip_id"]: c for c in store.clips()}

    # Two annotated people: two clips sharing one video.
    left = next(c for c in clips.values() if c.get("person") == "left")
    right = clips[left["video_id"] + "_right"]
    assert left["video"] == right["video"] and left["speaker"] != right["speaker"]
    assert not np.array_equal(store.read_clip("affwild2-va", left["clip_id"]),
                              store.read_clip("affwild2-va", right["clip_id"]))

    shapes = {s.clip_id: s for s in store.shape_manifest("affwild2-va")}
    rates = {c["fps"] for c in clips.values()}
    assert rates == {25.0, 30.0}  # one video runs at 25 fps: read from the file, not assumed
    for clip_id, clip in clips.items():
        n = int(round(SECONDS * clip["fps"]))
        assert shapes[clip_id].shape == (n, 2)
        assert shapes[clip_id].t_end == pytest.approx(n / clip["fps"])
    assert any(c["video"].endswith(".avi") for c in clips.values())

    first = store.read_clip("affwild2-va", "1-30-32x32")
    assert (first[:4] == -5).all() and (np.abs(first[4:]) <= 1).all()  # -5 kept as is
    info = store.resolve("affwild2-va")
    assert info.extra["invalid_value"] == -5 and info.extra["per_clip_frame_rate"]
    assert verify(store).ok


def test_broken_label_files_are_skipped_and_listed(affwild_root, tmp_path):
    root = tmp_path / "Aff-Wild2"
    shutil.copytree(affwild_root, root)
    train = root / "Annotations" / "VA_Estimation_Challenge" / "Train_Set"
    # labels shorter than the video
    short = train / "1-30-32x32.txt"
    short.write_text("\n".join(short.read_text().splitlines()[:-10]) + "\n")
    # a malformed line
    bad = train / "2-25-32x32.txt"
    rows = bad.read_text().splitlines()
    rows[7] = "0.1;0.2"
    bad.write_text("\n".join(rows) + "\n")
    # a label file whose name is not UTF-8
    with open(os.fsencode(train) + b"/\xff\xfe-30.txt", "w") as f:
        f.write("valence,arousal\n0.1,0.1\n")
    # a label file with no video
    (train / "77-30-32x32.txt").write_text("valence,arousal\n0.1,0.1\n")

    store = open_store(str(tmp_path / "aw.zarr"), dataset="affwild2")
    report = ingest(get_adapter("affwild2"), root, store)
    messages = [f["message"] for f in store.failures()]
    assert len(messages) == 4
    assert any("1-30-32x32.txt: 35 label frames but" in m and "has 45 frames" in m
               for m in messages)
    assert any("2-25-32x32.txt: line 8: expected 'valence,arousal'" in m for m in messages)
    assert any("not valid UTF-8" in m for m in messages)
    assert any("77-30-32x32.txt: missing video 77-30-32x32" in m for m in messages)
    assert report.clips_per_split == {"train": 2, "val": 1, "test": 1}
    assert verify(store).ok
