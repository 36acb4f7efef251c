"""IEMOCAP: dyadic sessions cut into utterances; the 6-class setup of the TPN/AWM recipe.

Layout as distributed (IEMOCAP_full_release)::

    <root>/Session{1..5}/dialog/avi/DivX/<dialog>.avi
    <root>/Session{1..5}/dialog/transcriptions/<dialog>.txt   "<utt_id> [start-end]: text"
    <root>/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt
        "[start - end]\\t<utt_id>\\t<emo>\\t[V, A, D]" per utterance

A clip is one utterance: the dialogue video with `start`/`end`. Classes hap, sad, neu, ang, exc,
fru (excited separate; `merge_excited=True` folds it into hap). Utterances with another label
(xxx = no agreement, oth, sur, fea, dis) are left out on purpose and counted, not listed as
failures. Sessions 1-4 are train, session 5 test. The speaker is the session and the letter of
the utterance's own turn (`Ses01_M`), not the session's first letter.
"""

from __future__ import annotations

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
from .files import list_dir, read_lines

CLASSES = ["hap", "sad", "neu", "ang", "exc", "fru"]
KNOWN_CODES = {"neu", "fru", "sad", "sur", "ang", "hap", "exc", "fea", "dis", "oth", "xxx"}
TEST_SESSIONS = {5}
_NUMBER = r"(\d+(?:\.\d+)?)"
_LABEL = re.compile(rf"^\[\s*{_NUMBER}\s*-\s*{_NUMBER}\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]")
_TRANSCRIPT = re.compile(r"^(\S+)\s+\[(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)\]:\s?(.*)$")
_SESSION = re.compile(r"^Session(\d+)$")


class IemocapAdapter(Adapter):
    name = "iemocap"
    title = "IEMOCAP dyadic sessions (6 emotions, utterance clips)"
    reads = (
        "Session*/dialog/EmoEvaluation/<dialog>.txt: utterance times, emotion, [V, A, D]",
        "Session*/dialog/transcriptions/<dialog>.txt: utterance text",
        "Session*/dialog/avi/DivX/<dialog>.avi: the dialogue video (cut by start/end)",
    )
    recipe = Recipe(
        encoders=["wav2vec2-base", "clip-vit-b16", "embeddinggemma"],
        default_head="tpn_awm",
        fps=2.0,
        labels=["iemocap-emotion", "iemocap-vad"],
        notes="Sessions 1-4 train, 5 test; hap, sad, neu, ang, exc, fru (exc separate).",
    )

    def __init__(self, merge_excited: bool = False) -> None:
        self.merge_excited = merge_excited
        self.classes = [c for c in CLASSES if c != "exc"] if merge_excited else list(CLASSES)

    def scan(self, data_root: str | Path) -> ScanResult:
        from features_store.errors import UserError

        root, result, out = self._begin_scan(data_root)
        out.stream(LabelStream(
            alias="iemocap-emotion", dim=1, dtype="int64", classes=self.classes,
            description="emotion class id per utterance",
            preprocessing={"source": "EmoEvaluation", "merge_excited": self.merge_excited}))
        out.stream(LabelStream(
            alias="iemocap-vad", dim=3, columns=["valence", "activation", "dominance"],
            description="evaluators' mean dimensional ratings (1..5) per utterance",
            preprocessing={"source": "EmoEvaluation"}))
        candidates = list(root.glob("Session*")) + list(root.glob("*/Session*"))
        sessions = sorted((int(m.group(1)), p) for p in candidates
                          if p.is_dir() and (m := _SESSION.match(p.name)))
        if not sessions:
            raise UserError(f"{root}: no Session1..5 folders: not an IEMOCAP data root")
        per_split: dict[str, int] = {}
        for number, folder in sessions:
            split = "test" if number in TEST_SESSIONS else "train"
            per_split[split] = per_split.get(split, 0) + self._scan_session(
                number, folder, split, out)
        for split in ("train", "test"):
            if not per_split.get(split):
                split_counts_problem(out, split, root)
        return result

    def _scan_session(self, number: int, folder: Path, split: str, out: Collector) -> int:
        dialog = folder / "dialog"
        added = 0
        for name in list_dir(dialog / "EmoEvaluation", out):
            path = dialog / "EmoEvaluation" / name
            if not name.endswith(".txt") or not path.is_file():
                continue
            dialog_id = name[:-4]
            texts = self._transcript(dialog / "transcriptions" / name)
            video = dialog / "avi" / "DivX" / f"{dialog_id}.avi"
            for line_no, line in enumerate(read_lines(path), start=1):
                if not line.startswith("["):
                    continue
                where = f"{display_path(path)}: line {line_no}"
                m = _LABEL.match(line)
                try:
                    clip, labels = self._read_line(m, where, number, split, dialog_id, video,
                                                   texts)
                except SkipClip as exc:
                    out.problem(str(exc), clip_id=m.group(3) if m else None, file=path)
                    continue
                if clip is None:
                    out.result.excluded += 1
                    continue
                clip["listed_in"] = f"{name}:{line_no}"
                added += out.add(clip, labels)
        return added

    @staticmethod
    def _transcript(path: Path) -> dict[str, str]:
        if not path.is_file():
            return {}
        texts = {}
        for line in read_lines(path):
            m = _TRANSCRIPT.match(line.strip())
            if m:
                texts[m.group(1)] = m.group(4).strip()
        return texts

    def _read_line(self, m: re.Match | None, where: str, session: int, split: str,
                   dialog_id: str, video: Path, texts: dict[str, str]
                   ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        if m is None:
            raise SkipClip(f"{where}: expected '[start - end] <utt_id> <emotion> [V, A, D]'")
        start, end, utt_id, code = float(m.group(1)), float(m.group(2)), m.group(3), m.group(4)
        if code not in KNOWN_CODES:
            raise SkipClip(f"{where}: unknown emotion code {code!r}")
        if end <= start:
            raise SkipClip(f"{where}: end time {end} is not after start time {start}")
        try:
            vad = [float(x) for x in m.group(5).split(",")]
            if len(vad) != 3:
                raise ValueError
        except ValueError:
            raise SkipClip(f"{where}: expected three numbers in [V, A, D]") from None
        label = "hap" if (code == "exc" and self.merge_excited) else code
        if label not in self.classes:
            return None, {}
        if not video.is_file():
            raise SkipClip(f"{where}: missing video {display_path(video)}")
        turn = utt_id.rsplit("_", 1)[-1]
        record = {
            "clip_id": utt_id,
            "split": split,
            "dataset": self.name,
            "video": str(video.resolve()),
            "audio": str(video.resolve()),
            "source": str(video.resolve()),
            "start": start,
            "end": end,
            "duration": end - start,
            "text": texts.get(utt_id, ""),
            "speaker": f"Ses{session:02d}_{turn[:1]}",
            "session": session,
            "dialog": dialog_id,
            "emotion": code,
        }
        labels = {"iemocap-emotion": [self.classes.index(label)], "iemocap-vad": vad}
        return record, labels
