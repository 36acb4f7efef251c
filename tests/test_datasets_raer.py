"""RAER: classroom frame folders with a class per clip and face/body boxes for the crops.

Story: the annotation lists give each clip's frame folder and class; the adapter keeps the face
boxes per frame and the body box in the clip record (the extractor crops with them) and stores
the 0-based class; a bad list line or a folder that disagrees with its line is skipped and listed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from features_store import open_store, verify
from pipelines.datasets import get_adapter
from pipelines.datasets.raer import CLASSES
from pipelines.ingest import ingest
from pipelines.samples import generate_sample


@pytest.fixture(scope="module")
def raer_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raer") / "RAER"
    generate_sample("raer", root, clips=10, seconds=1, seed=1, size=32)
    return root


def test_sample_ingests_classes_and_boxes(raer_root, tmp_path):
    store = open_store(str(tmp_path / "raer.zarr"), dataset="raer")
    report = ingest(get_adapter("raer"), raer_root, store)
    assert report.problems == []
    assert report.clips_per_split == {"train": 6, "val": 2, "test": 2}

    lines = {}
    for split in ("train", "val", "test"):
        for line in (raer_root / "annotation" / f"{split}.txt").read_text().splitlines():
            frame_dir, n, label = line.split()
            lines[frame_dir] = (split, int(n), int(label))
    info = store.resolve("raer-class")
    assert info.frame_shift_s is None and info.dtype == "int64"
    assert info.extra["classes"] == CLASSES
    for clip in store.clips():
        split, n, label = lines[clip["clip_id"]]
        assert clip["split"] == split and clip["n_frames"] == n
        assert store.read_clip("raer-class", clip["clip_id"]).tolist() == [[label - 1]]
        assert clip["emotion"] == CLASSES[label - 1]
        faces, body = clip["boxes"]["face"], clip["boxes"]["body"]
        assert len(faces) == n and all(len(b) == 4 for b in faces.values())
        assert len(body) == 4 and clip["face_margin"] == 20
        assert set(faces) <= {p.name for p in Path(clip["frames"]).iterdir()}
    assert verify(store).ok


def test_face_crop_carries_the_class_colour(raer_root):
    """The planted signal: the face box region is coloured by class, distinct across classes."""
    result = get_adapter("raer").scan(raer_root)
    colour_of: dict[str, list] = {}
    for clip in result.clips:
        name, box = sorted(clip["boxes"]["face"].items())[0]
        image = np.asarray(Image.open(Path(clip["frames"]) / name).convert("RGB"), float)
        l, t, r, b = (int(v) for v in box)
        colour_of.setdefault(clip["emotion"], []).append(image[t + 2: b - 2, l + 2: r - 2]
                                                         .reshape(-1, 3).mean(axis=0))
    means = {k: np.mean(v, axis=0) for k, v in colour_of.items()}
    spread = max(np.abs(np.asarray(v) - means[k]).max() for k, vs in colour_of.items() for v in vs)
    gaps = [np.abs(means[a] - means[b]).max() for a in means for b in means if a < b]
    assert len(means) == 5 and min(gaps) > 4 * max(spread, 1.0)


def test_broken_lines_are_skipped_and_listed(raer_root, tmp_path):
    root = tmp_path / "RAER"
    shutil.copytree(raer_root, root)
    train = root / "annotation" / "train.txt"
    lines = train.read_text().splitlines()
    first_dir = lines[0].split()[0]
    # an unknown emotion code, a frame count that disagrees with the folder, a missing folder,
    # a malformed line
    lines[1] = " ".join(lines[1].split()[:2] + ["7"])
    dir2, n2, label2 = lines[2].split()
    lines[2] = f"{dir2} {int(n2) + 5} {label2}"
    shutil.rmtree(root / lines[3].split()[0])
    lines.append("frames/room9/clip9999 16")
    train.write_text("\n".join(lines) + "\n")
    # boxes for a frame that does not exist are dropped, not passed to the extractor
    faces = json.loads((root / "bounding_box" / "face.json").read_text())
    faces[first_dir]["99999.jpg"] = [0, 0, 4, 4]
    (root / "bounding_box" / "face.json").write_text(json.dumps(faces))

    store = open_store(str(tmp_path / "raer.zarr"), dataset="raer")
    report = ingest(get_adapter("raer"), root, store)
    messages = [f["message"] for f in store.failures()]
    assert len(messages) == 4
    assert any("train.txt: line 2: unknown emotion code '7'" in m for m in messages)
    assert any("train.txt: line 3: says" in m and "has 16" in m for m in messages)
    assert any("train.txt: line 4: missing frame folder" in m for m in messages)
    assert any("train.txt: line 7: expected '<frame_dir> <num_frames> <label>'" in m
               for m in messages)
    assert report.clips_per_split == {"train": 3, "val": 2, "test": 2}
    first = next(c for c in store.clips() if c["clip_id"] == first_dir)
    assert "99999.jpg" not in first["boxes"]["face"]
    assert verify(store).ok
