"""MELD, IEMOCAP and CMU-MOSEI: one clip per utterance, with text, speaker, times and labels.

Story: each adapter reads its release's own files (MELD csvs and clip folders, IEMOCAP
EmoEvaluation/transcriptions/avi, MOSEI's HDF5 label sequence, transcripts and folds) and the
store gets utterance clips with the class ids (or MOSEI's 7 values) as one-row label streams.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from features_store import open_store, verify
from pipelines.datasets import get_adapter
from pipelines.datasets.iemocap import CLASSES as IEMOCAP_CLASSES
from pipelines.datasets.meld import CLASSES as MELD_CLASSES
from pipelines.datasets.mosei import COLUMNS
from pipelines.ingest import ingest
from pipelines.samples import generate_sample


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("utterances")
    sizes = {"meld": 14, "iemocap": 10, "mosei": 9}
    for name, clips in sizes.items():
        generate_sample(name, base / name, clips=clips, seconds=0.5, seed=5, size=32)
    return {name: base / name for name in sizes}


def _ingest(name: str, root: Path, tmp_path: Path):
    store = open_store(str(tmp_path / f"{name}.zarr"), dataset=name)
    return store, ingest(get_adapter(name), root, store)


def test_meld(roots, tmp_path):
    store, report = _ingest("meld", roots["meld"], tmp_path)
    assert report.problems == []
    assert report.clips_per_split == {"train": 10, "val": 2, "test": 2}  # dev -> val
    clips = store.clips()
    for clip in clips:
        split, stem = clip["clip_id"].split("/")
        assert stem == f"dia{clip['dialogue_id']}_utt{clip['utterance_id']}"
        assert Path(clip["video"]).name == f"{stem}.mp4"
        assert clip["text"] and clip["speaker"]
        assert "start" not in clip  # the mp4 is already the utterance
        assert clip["episode_end"] - clip["episode_start"] == pytest.approx(0.5)
        label = store.read_clip("meld-emotion", clip["clip_id"])[0, 0]
        assert MELD_CLASSES[label] == clip["emotion"]
    assert {c["emotion"] for c in clips} == set(MELD_CLASSES)
    assert verify(store).ok


def test_meld_broken_rows(roots, tmp_path):
    root = tmp_path / "meld"
    shutil.copytree(roots["meld"], root)
    csv_path = root / "train_sent_emo.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1].replace(",anger,", ",rage,")  # unknown emotion code
    lines[2] = ",".join(lines[2].split(",")[:5])  # malformed row (4 csv fields)
    csv_path.write_text("\n".join(lines) + "\n")
    (root / "dev_splits_complete" / "dia0_utt1.mp4").unlink()  # missing media file
    store, report = _ingest("meld", root, tmp_path)
    messages = [f["message"] for f in store.failures()]
    assert len(messages) == 3
    assert any("train_sent_emo.csv: line 2: unknown emotion code 'rage'" in m for m in messages)
    assert any("train_sent_emo.csv: line 3: expected 11 fields, got 4" in m for m in messages)
    assert any("dev_sent_emo.csv: line 3: missing video dia0_utt1.mp4" in m for m in messages)
    assert report.clips_per_split == {"train": 8, "val": 1, "test": 2}
    assert verify(store).ok


def test_iemocap(roots, tmp_path):
    store, report = _ingest("iemocap", roots["iemocap"], tmp_path)
    assert report.problems == [] and report.excluded == 1  # the `xxx` utterance
    assert report.clips_per_split == {"train": 8, "test": 2}  # session 5 is test
    for clip in store.clips():
        assert clip["session"] == (5 if clip["split"] == "test" else clip["session"])
        assert clip["end"] - clip["start"] == pytest.approx(0.5)
        assert clip["speaker"] == f"Ses{clip['session']:02d}_{clip['clip_id'][-4]}"
        assert clip["video"].endswith(f"{clip['dialog']}.avi") and clip["text"]
        label = store.read_clip("iemocap-emotion", clip["clip_id"])[0, 0]
        assert IEMOCAP_CLASSES[label] == clip["emotion"]
        assert store.read_clip("iemocap-vad", clip["clip_id"]).shape == (1, 3)
    assert verify(store).ok
    merged = get_adapter("iemocap", merge_excited=True).scan(roots["iemocap"])
    assert merged.labels["iemocap-emotion"].classes == ["hap", "sad", "neu", "ang", "fru"]


def test_iemocap_broken_lines(roots, tmp_path):
    root = tmp_path / "iemocap"
    shutil.copytree(roots["iemocap"], root)
    evaluation = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    text = evaluation.read_text().replace("\thap\t", "\tzzz\t", 1)
    evaluation.write_text(text)
    (root / "Session2" / "dialog" / "avi" / "DivX" / "Ses02F_impro01.avi").unlink()
    store, report = _ingest("iemocap", root, tmp_path)
    messages = [f["message"] for f in store.failures()]
    assert any("Ses01F_impro01.txt: line 3: unknown emotion code 'zzz'" in m for m in messages)
    assert sum("missing video" in m and "Ses02F_impro01.avi" in m for m in messages) == 2
    assert len(messages) == 3 and report.clips == 7
    assert verify(store).ok


def test_mosei(roots, tmp_path):
    store, report = _ingest("mosei", roots["mosei"], tmp_path)
    assert report.problems == [] and report.notes == []  # folds read from the fold files
    assert report.clips_per_split == {"train": 3, "val": 3, "test": 3}
    info = store.resolve("mosei-labels")
    assert info.dim == 7 and info.extra["columns"] == COLUMNS
    for clip in store.clips():
        values = store.read_clip("mosei-labels", clip["clip_id"])[0]
        emotion = int(np.argmax(values[:6]))
        assert COLUMNS[emotion] in ("happy", "sad", "anger", "surprise", "disgust", "fear")
        assert np.sign(values[6]) == (1 if COLUMNS[emotion] in ("happy", "surprise") else -1)
        assert clip["end"] - clip["start"] == pytest.approx(0.5)
        assert clip["text"].startswith("i was")  # matched from the segmented transcript
    assert verify(store).ok


def test_mosei_missing_video(roots, tmp_path):
    root = tmp_path / "mosei"
    shutil.copytree(roots["mosei"], root)
    video = sorted((root / "Raw" / "Videos" / "Full" / "Combined").iterdir())[0]
    video.unlink()
    store, report = _ingest("mosei", root, tmp_path)
    messages = [f["message"] for f in store.failures()]
    assert sum(f"missing video {video.stem}.mp4" in m for m in messages) == 3
    # One video per fold in this tiny sample: losing it empties its fold, which is said too.
    fold = next(s for s, n in {"train": "standard_train_fold", "val": "standard_valid_fold",
                               "test": "standard_test_fold"}.items()
                if video.stem in (root / f"{n}.txt").read_text())
    assert any(f"split {fold!r} has no usable clips" in m for m in messages)
    assert len(messages) == 4 and report.clips == 6
    assert verify(store).ok
