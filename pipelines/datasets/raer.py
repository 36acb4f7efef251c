"""RAER (classroom learning emotions): frame folders, one class per clip, face and body boxes.

Layout as distributed::

    <root>/annotation/{train,val,test}.txt   lines "<frame_dir> <num_frames> <label 1..5>"
                                             (train_80.txt / val_20.txt variants are read too)
    <root>/bounding_box/face.json            {frame_dir: {frame_file: [l, t, r, b]}}
    <root>/bounding_box/body.json            {frame_dir: [l, t, r, b]}
    <root>/<frame_dir>/<frame files>

Frame dirs are relative to the data root (or to its parent when they start with the root's own
name, as the RAPT-CLIP scripts run from one level up). The face crop takes a 20 px margin; a clip
without boxes uses the whole frame, as the paper's loader does.
"""

from __future__ import annotations

import json
import posixpath
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
from .files import frame_images, read_lines, read_plain_file

CLASSES = ["Neutrality", "Enjoyment", "Confusion", "Fatigue", "Distraction"]
FACE_MARGIN = 20
SEGMENTS = 16


def _norm(path: str) -> str:
    path = posixpath.normpath(path.replace("\\", "/"))
    return path[2:] if path.startswith("./") else path


class _BoxTable:
    """Box json keyed by frame dir, looked up through the path spellings the authors used."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.exact = {_norm(k): v for k, v in data.items()}
        self.by_tail: dict[str, list[str]] = {}
        for key in self.exact:
            self.by_tail.setdefault("/".join(key.split("/")[-2:]), []).append(key)

    def get(self, frame_dir: str) -> Any:
        norm = _norm(frame_dir)
        if norm in self.exact:
            return self.exact[norm]
        for key in self.by_tail.get("/".join(norm.split("/")[-2:]), []):
            if key.endswith("/" + norm) or norm.endswith("/" + key):
                return self.exact[key]
        return None


def _pick_lists(folder: Path) -> dict[str, Path]:
    names = sorted(p.name for p in folder.glob("*.txt"))
    by_prefix = {s: [n for n in names if n.lower().startswith(s)] for s in ("train", "val", "test")}
    chosen: dict[str, Path] = {}
    for split in ("val", "test"):
        if by_prefix[split]:
            exact = f"{split}.txt"
            chosen[split] = folder / (exact if exact in by_prefix[split] else by_prefix[split][0])
    trains = by_prefix["train"]
    if trains:
        carved = [n for n in trains if n != "train.txt"]
        # A val list carved out of train (val_20.txt) goes with its train_80.txt.
        use = carved[0] if carved and "val" in chosen and chosen["val"].name != "val.txt" else None
        chosen["train"] = folder / (use or ("train.txt" if "train.txt" in trains else trains[0]))
    return chosen


class RaerAdapter(Adapter):
    name = "raer"
    title = "RAER classroom learning emotions (5 classes, face and body crops)"
    reads = (
        "annotation/{train,val,test}.txt: '<frame_dir> <num_frames> <label 1..5>'",
        "bounding_box/face.json: per-frame face boxes; bounding_box/body.json: one body box",
        "<frame_dir>/: the clip's frames",
    )
    # The released loader's CLIP input (`@rapt`: [0,1] pixels, faces squashed, bodies
    # letterboxed), which the temporal_attention head's paper profile reads; `profile=fixed`
    # reads clip-vit-b16@face / @body (open_clip's transform): extract those by name.
    recipe = Recipe(
        encoders=["clip-vit-b16@rapt@face", "clip-vit-b16@rapt@body"],
        default_head="temporal_attention",
        labels=["raer-class"],
        segments=SEGMENTS,
        notes="CLIP ViT-B/16 embeddings of the face crop (20 px margin) and the body crop on "
              "the released loader's input (rapt: [0,1] pixels, faces squashed, bodies "
              "letterboxed), 16 segments per clip (centre frame in evaluation); caching freezes "
              "the image encoder (the paper fine-tunes it at lr 1e-6); --views "
              "hflip,rot-4,rot+4 caches augmented views.",
    )

    def scan(self, data_root: str | Path) -> ScanResult:
        from features_store.errors import UserError

        root, result, out = self._begin_scan(data_root)
        out.stream(LabelStream(alias="raer-class", dim=1, dtype="int64", classes=CLASSES,
                               description="class id per clip (0-based)",
                               preprocessing={"source": "annotation lists",
                                              "label": "1..5 -> 0..4"}))
        ann = root / "annotation"
        if not ann.is_dir():
            raise UserError(f"{ann}: missing annotation folder: not a RAER data root")
        lists = _pick_lists(ann)
        if not lists:
            raise UserError(f"{ann}: no train/val/test .txt lists")
        face = self._boxes(root / "bounding_box" / "face.json", out)
        body = self._boxes(root / "bounding_box" / "body.json", out)
        for split in ("train", "val", "test"):
            if split in lists:
                self._scan_list(root, split, lists[split], face, body, out)
        return result

    def _boxes(self, path: Path, out: Collector) -> _BoxTable:
        if not path.is_file():
            out.problem(f"{display_path(path)}: missing box file; crops fall back to the whole "
                        "frame", file=path)
            return _BoxTable({})
        try:
            data = json.loads(read_plain_file(path).decode("utf-8"))
        except (ValueError, OSError) as exc:
            out.problem(f"{display_path(path)}: not valid JSON ({exc}); crops fall back to the "
                        "whole frame", file=path)
            return _BoxTable({})
        if not isinstance(data, dict):
            out.problem(f"{display_path(path)}: expected an object keyed by frame dir", file=path)
            return _BoxTable({})
        return _BoxTable(data)

    def _scan_list(self, root: Path, split: str, path: Path, face: _BoxTable, body: _BoxTable,
                   out: Collector) -> None:
        added = 0
        for line_no, line in enumerate(read_lines(path), start=1):
            if not line.strip():
                continue
            where = f"{display_path(path)}: line {line_no}"
            fields = line.split()
            clip_id = _norm(fields[0]) if fields else None
            try:
                clip = self._read_clip(root, split, fields, where, face, body)
            except SkipClip as exc:
                out.problem(str(exc), clip_id=clip_id, file=path)
                continue
            clip["listed_in"] = f"{path.name}:{line_no}"
            label = [CLASSES.index(clip["emotion"])]
            added += out.add(clip, {"raer-class": label})
        if not added:
            split_counts_problem(out, split, path)

    def _read_clip(self, root: Path, split: str, fields: list[str], where: str,
                   face: _BoxTable, body: _BoxTable) -> dict[str, Any]:
        if len(fields) != 3:
            raise SkipClip(f"{where}: expected '<frame_dir> <num_frames> <label>', got "
                           f"{len(fields)} fields")
        frame_dir, count, label = fields
        try:
            n_frames, label_id = int(count), int(label)
        except ValueError:
            raise SkipClip(f"{where}: num_frames and label must be integers") from None
        if not 1 <= label_id <= len(CLASSES):
            raise SkipClip(f"{where}: unknown emotion code {label!r} (expected 1..{len(CLASSES)})")
        folder = self._resolve(root, frame_dir)
        if folder is None:
            raise SkipClip(f"{where}: missing frame folder {frame_dir!r}")
        names = frame_images(folder)
        if not names:
            raise SkipClip(f"{where}: frame folder {display_path(folder)} has no images")
        if len(names) != n_frames:
            raise SkipClip(f"{where}: says {n_frames} frames, {display_path(folder)} has "
                           f"{len(names)}")
        clip_id = _norm(frame_dir)
        boxes: dict[str, Any] = {}
        face_boxes = face.get(frame_dir)
        if isinstance(face_boxes, dict):
            # Only frames of this folder: the extractor rejects a box for a frame it cannot find.
            present = set(names)
            boxes["face"] = {str(k): [float(x) for x in v] for k, v in face_boxes.items()
                             if str(k) in present and isinstance(v, list | tuple) and len(v) == 4}
        body_box = body.get(frame_dir)
        if isinstance(body_box, list | tuple) and len(body_box) == 4:
            boxes["body"] = [float(x) for x in body_box]
        return {
            "clip_id": clip_id,
            "split": split,
            "dataset": self.name,
            "frames": str(folder.resolve()),
            "source": str(folder.resolve()),
            "n_frames": len(names),
            "speaker": posixpath.dirname(clip_id) or clip_id,
            "emotion": CLASSES[label_id - 1],
            "boxes": boxes or None,
            "face_margin": FACE_MARGIN,
        }

    @staticmethod
    def _resolve(root: Path, frame_dir: str) -> Path | None:
        rel = Path(_norm(frame_dir))
        for candidate in (rel if rel.is_absolute() else root / rel, root.parent / rel):
            if candidate.is_dir():
                return candidate
        return None
