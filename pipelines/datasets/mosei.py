"""CMU-MOSEI: YouTube monologues cut into labelled segments; 6 emotion intensities + sentiment.

Layout as distributed (the raw release plus the CMU SDK's computational sequences)::

    <root>/**/CMU_MOSEI_Labels.csd              HDF5: <name>/data/<vid>/{features [n, 7],
                                                intervals [n, 2]}; columns sentiment, happy,
                                                sad, anger, surprise, disgust, fear
    <root>/**/Videos/**/<vid>.mp4               full videos
    <root>/**/Transcript/**/<vid>.txt           "<vid>___<k>___<start>___<end>___<text>"
    <root>/**/standard_{train,valid,test}_fold.txt   video ids per fold (one per line)

A clip is one labelled segment `<vid>/<k>` (k = the row of the label sequence): the video with
`start`/`end`. The standard folds come from the fold files, else from the CMU SDK if it is
installed; without either, videos are split 70/10/20 by a hash of their id (said in the notes).
The label stream reorders the columns to the 6 emotions then sentiment.
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
    split_counts_problem,
)
from .files import find_files, read_lines

CSD_COLUMNS = ["sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear"]
COLUMNS = ["happy", "sad", "anger", "surprise", "disgust", "fear", "sentiment"]
_REORDER = [CSD_COLUMNS.index(c) for c in COLUMNS]
FOLDS = {"train": "standard_train_fold", "val": "standard_valid_fold",
         "test": "standard_test_fold"}
TIME_TOLERANCE_S = 0.1


def _read_folds(root: Path) -> dict[str, str] | None:
    split_of: dict[str, str] = {}
    for split, stem in FOLDS.items():
        path = next(iter(sorted(root.glob(f"**/{stem}.txt"))), None)
        if path is None:
            break
        for line in read_lines(path):
            if line.strip():
                split_of.setdefault(line.strip(), split)
    else:
        return split_of
    try:  # the SDK keeps the folds as Python lists
        from mmsdk.mmdatasdk.dataset.standard_datasets.CMU_MOSEI import (  # type: ignore
            cmu_mosei_std_folds as folds,
        )
    except ImportError:
        return None
    for split, name in FOLDS.items():
        for vid in getattr(folds, name, []):
            split_of.setdefault(str(vid), split)
    return split_of


def _hash_split(vid: str) -> str:
    bucket = zlib.crc32(vid.encode("utf-8")) % 10
    return "train" if bucket < 7 else "val" if bucket < 8 else "test"


def _read_transcript(path: Path | None) -> list[tuple[float, float, str]]:
    if path is None:
        return []
    segments = []
    for line in read_lines(path):
        parts = line.split("___")
        if len(parts) >= 5:
            try:
                segments.append((float(parts[2]), float(parts[3]), "___".join(parts[4:]).strip()))
            except ValueError:
                continue
    return segments


class MoseiAdapter(Adapter):
    name = "mosei"
    title = "CMU-MOSEI segments (6 emotion intensities + sentiment)"
    reads = (
        "CMU_MOSEI_Labels.csd (HDF5 computational sequence): per-segment labels and intervals",
        "Videos/**/<vid>.mp4; Transcript/**/<vid>.txt segmented transcripts",
        "standard_{train,valid,test}_fold.txt (or the CMU SDK's standard folds)",
    )
    recipe = Recipe(
        encoders=["wav2vec2-base", "clip-vit-b16", "embeddinggemma"],
        default_head="tpn_awm",
        fps=2.0,
        labels=["mosei-labels"],
        notes="mosei-labels columns: happy sad anger surprise disgust fear (0..3) then "
              "sentiment (-3..3); a class id for 6-class training is the argmax of the first 6.",
    )

    def scan(self, data_root: str | Path) -> ScanResult:
        from features_store.errors import UserError

        root, result, out = self._begin_scan(data_root)
        out.stream(LabelStream(
            alias="mosei-labels", dim=7, columns=COLUMNS,
            description="6 emotion intensities then sentiment, per segment",
            preprocessing={"source": "CMU_MOSEI_Labels.csd", "columns": COLUMNS}))
        csd = next(iter(sorted(root.glob("**/*Labels*.csd"))), None)
        if csd is None:
            raise UserError(f"{root}: no CMU_MOSEI_Labels.csd: not a CMU-MOSEI data root")
        labels = self._read_csd(csd)
        videos = find_files(root, (".mp4",), out)
        transcripts = {stem: p for stem, p in find_files(root, (".txt",), out).items()
                       if "transcript" in str(p.parent).lower()}
        split_of = _read_folds(root)
        if split_of is None:
            result.notes.append("no standard fold files and no CMU SDK: videos split 70/10/20 "
                                "by a hash of their id")
        for vid, (features, intervals) in labels.items():
            split = (split_of or {}).get(vid) or (_hash_split(vid) if split_of is None else None)
            if split is None:
                result.excluded += len(features)  # not in any standard fold
                continue
            segments = _read_transcript(transcripts.get(vid))
            for k in range(len(features)):
                clip_id = f"{vid}/{k}"
                try:
                    clip, rows = self._segment(csd, vid, k, features, intervals, videos,
                                               segments, split)
                except SkipClip as exc:
                    out.problem(str(exc), clip_id=clip_id)
                    continue
                out.add(clip, {"mosei-labels": rows})
        counts = result.clips_per_split()
        for split in FOLDS:
            if labels and not counts.get(split):
                split_counts_problem(out, split, csd)
        return result

    @staticmethod
    def _read_csd(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        import h5py

        from features_store.errors import UserError

        try:
            with h5py.File(path, "r") as f:
                top = next(iter(f.values()))
                data = top["data"]
                return {vid: (np.asarray(g["features"], dtype=np.float64),
                              np.asarray(g["intervals"], dtype=np.float64))
                        for vid, g in data.items()}
        except (OSError, KeyError, StopIteration) as exc:
            raise UserError(f"{path}: not a readable computational sequence ({exc})") from None

    def _segment(self, csd: Path, vid: str, k: int, features: np.ndarray, intervals: np.ndarray,
                 videos: dict[str, Path], segments: list[tuple[float, float, str]], split: str
                 ) -> tuple[dict[str, Any], np.ndarray]:
        where = f"{display_path(csd)}: {vid} row {k}"
        if features.ndim != 2 or features.shape[1] != len(CSD_COLUMNS) or k >= len(intervals):
            raise SkipClip(f"{where}: expected features [n, 7] and intervals [n, 2], got "
                           f"{features.shape} and {intervals.shape}")
        row = features[k]
        start, end = (float(x) for x in intervals[k][:2])
        if not np.isfinite(row).all() or not (np.isfinite(start) and np.isfinite(end)):
            raise SkipClip(f"{where}: NaN or infinite label or interval")
        if end <= start:
            raise SkipClip(f"{where}: interval end {end} is not after start {start}")
        video = videos.get(vid)
        if video is None:
            raise SkipClip(f"{where}: missing video {vid}.mp4 under the data root")
        text = next((t for s, e, t in segments if abs(s - start) <= TIME_TOLERANCE_S
                     and abs(e - end) <= TIME_TOLERANCE_S), "")
        record = {
            "clip_id": f"{vid}/{k}",
            "split": split,
            "dataset": self.name,
            "video": str(video.resolve()),
            "audio": str(video.resolve()),
            "source": str(video.resolve()),
            "start": start,
            "end": end,
            "duration": end - start,
            "text": text,
            "speaker": vid,
            "video_id": vid,
        }
        return record, row[_REORDER].astype(np.float32)
