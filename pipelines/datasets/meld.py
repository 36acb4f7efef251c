"""MELD (Friends dialogues): one clip per utterance, 7 emotions, official train/dev/test.

Layout as distributed (MELD.Raw)::

    <root>/{train,dev,test}_sent_emo.csv    Sr No., Utterance, Speaker, Emotion, Sentiment,
                                            Dialogue_ID, Utterance_ID, Season, Episode,
                                            StartTime, EndTime
    <root>/**/train_splits/dia{D}_utt{U}.mp4
    <root>/**/dev_splits_complete/dia{D}_utt{U}.mp4
    <root>/**/output_repeated_splits_test/dia{D}_utt{U}.mp4

Each mp4 is already cut to its utterance, so the clip spans the whole file; the episode times
are kept as `episode_start`/`episode_end`. Dialogue ids restart per split, hence clip ids
`<split>/dia{D}_utt{U}`; MELD's `dev` is our `val`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from .base import (
    Adapter,
    Collector,
    LabelStream,
    Recipe,
    ScanResult,
    SkipClip,
    display_path,
    split_counts_problem,
)
from .files import find_files, read_lines

CLASSES = ["anger", "disgust", "sadness", "joy", "neutral", "surprise", "fear"]
SENTIMENTS = ["negative", "neutral", "positive"]
SPLITS = {"train": "train", "dev": "val", "test": "test"}
# Folder names of each split's clips in MELD.Raw (the test archive has an odd one).
CLIP_FOLDERS = {"train": ("train_splits", "train"), "dev": ("dev_splits_complete", "dev"),
                "test": ("output_repeated_splits_test", "test_splits", "test")}
COLUMNS = ["Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
           "StartTime", "EndTime"]
_TIME = re.compile(r"^(\d+):(\d+):(\d+)[,.](\d+)$")


def parse_time(text: str) -> float:
    """'00:14:38,127' -> seconds."""
    m = _TIME.match(text.strip())
    if not m:
        raise ValueError(text)
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + int(frac) / 10 ** len(frac)


def _clip_index(root: Path, meld_split: str, out: Collector) -> dict[str, Path]:
    for name in CLIP_FOLDERS[meld_split]:
        for folder in sorted(p for p in root.glob(f"**/{name}") if p.is_dir()):
            found = find_files(folder, (".mp4",), out)
            if found:
                return found
    return {}


class MeldAdapter(Adapter):
    name = "meld"
    title = "MELD multimodal EmotionLines (7 emotions, utterance clips)"
    reads = (
        "{train,dev,test}_sent_emo.csv: utterance text, speaker, emotion, sentiment, times",
        "train_splits/, dev_splits_complete/, output_repeated_splits_test/: dia{D}_utt{U}.mp4",
    )
    recipe = Recipe(
        encoders=["wav2vec2-base", "clip-vit-b16", "embeddinggemma"],
        default_head="tpn_awm",
        fps=2.0,
        labels=["meld-emotion", "meld-sentiment"],
        notes="One clip per utterance; official splits (dev -> val).",
    )

    def scan(self, data_root: str | Path) -> ScanResult:
        from features_store.errors import UserError

        root, result, out = self._begin_scan(data_root)
        out.stream(LabelStream(alias="meld-emotion", dim=1, dtype="int64", classes=CLASSES,
                               description="emotion class id per utterance",
                               preprocessing={"source": "*_sent_emo.csv Emotion"}))
        out.stream(LabelStream(alias="meld-sentiment", dim=1, dtype="int64", classes=SENTIMENTS,
                               description="sentiment class id per utterance",
                               preprocessing={"source": "*_sent_emo.csv Sentiment"}))
        found = False
        for meld_split, split in SPLITS.items():
            csv_path = next(iter(sorted(root.glob(f"**/{meld_split}_sent_emo.csv"))), None)
            if csv_path is None:
                continue
            found = True
            self._scan_csv(root, csv_path, meld_split, split, out)
        if not found:
            raise UserError(f"{root}: no train/dev/test_sent_emo.csv: not a MELD data root")
        return result

    def _scan_csv(self, root: Path, csv_path: Path, meld_split: str, split: str,
                  out: Collector) -> None:
        reader = csv.reader(read_lines(csv_path))
        header = [h.strip() for h in next(reader, [])]
        if not header:
            split_counts_problem(out, split, csv_path)
            return
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            out.problem(f"{display_path(csv_path)}: line 1: missing columns {', '.join(missing)}",
                        file=csv_path)
            return
        clips = _clip_index(root, meld_split, out)
        added = 0
        for fields in reader:
            line_no = reader.line_num  # the last line of the record (quotes may span lines)
            if not any(f.strip() for f in fields):
                continue
            where = f"{display_path(csv_path)}: line {line_no}"
            try:
                clip, labels = self._read_row(header, fields, where, meld_split, split, clips)
            except SkipClip as exc:
                out.problem(str(exc), clip_id=_guess_id(header, fields, split), file=csv_path)
                continue
            clip["listed_in"] = f"{csv_path.name}:{line_no}"
            added += out.add(clip, labels)
        if not added:
            split_counts_problem(out, split, csv_path)

    def _read_row(self, header: list[str], fields: list[str], where: str, meld_split: str,
                  split: str, clips: dict[str, Path]) -> tuple[dict[str, Any], dict[str, Any]]:
        if len(fields) != len(header):
            raise SkipClip(f"{where}: expected {len(header)} fields, got {len(fields)}")
        row = dict(zip(header, (f.strip() for f in fields)))
        try:
            dia, utt = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
        except ValueError:
            raise SkipClip(f"{where}: Dialogue_ID and Utterance_ID must be integers") from None
        emotion = row["Emotion"].lower()
        if emotion not in CLASSES:
            raise SkipClip(f"{where}: unknown emotion code {row['Emotion']!r}")
        sentiment = row["Sentiment"].lower()
        if sentiment not in SENTIMENTS:
            raise SkipClip(f"{where}: unknown sentiment {row['Sentiment']!r}")
        try:
            start, end = parse_time(row["StartTime"]), parse_time(row["EndTime"])
        except ValueError:
            raise SkipClip(f"{where}: StartTime/EndTime must look like 00:14:38,127") from None
        stem = f"dia{dia}_utt{utt}"
        video = clips.get(stem)
        if video is None:
            raise SkipClip(f"{where}: missing video {stem}.mp4 in the {meld_split} clip folder")
        record = {
            "clip_id": f"{split}/{stem}",
            "split": split,
            "dataset": self.name,
            "video": str(video.resolve()),
            "audio": str(video.resolve()),
            "source": str(video.resolve()),
            "duration": max(0.0, end - start),
            "text": row["Utterance"],
            "speaker": row["Speaker"],
            "emotion": emotion,
            "sentiment": sentiment,
            "dialogue_id": dia,
            "utterance_id": utt,
            "season": row.get("Season"),
            "episode": row.get("Episode"),
            "episode_start": start,
            "episode_end": end,
        }
        labels = {"meld-emotion": [CLASSES.index(emotion)],
                  "meld-sentiment": [SENTIMENTS.index(sentiment)]}
        return record, labels


def _guess_id(header: list[str], fields: list[str], split: str) -> str | None:
    try:
        row = dict(zip(header, fields, strict=True))
        return f"{split}/dia{int(row['Dialogue_ID'])}_utt{int(row['Utterance_ID'])}"
    except (ValueError, KeyError):
        return None
