"""What every dataset adapter is: a layout reader that turns a dataset folder into clips and labels.

An adapter reads a dataset exactly as it is distributed. `scan` touches no store: it returns the
clip records (the fields the extraction runner reads, plus dataset fields), the label streams and
aux arrays that `pipelines.ingest` writes, and one problem per clip or file it had to skip. A bad
file never stops a scan halfway: its clip is dropped and listed, the rest goes on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Bumped when an adapter's output for the same input changes; it is part of every label
# stream's key, so a changed reader gives new streams instead of stale ones.
ADAPTER_CODE_VERSION = "datasets-1"
SPLITS = ("train", "val", "test")


@dataclass
class Recipe:
    """The default extraction and training plan for a dataset (`affect extract --dataset`).

    `encoders` are extraction requests (`name` or `name@face` / `name@body` for crops);
    `encoder_options` go to `create_encoder` as keyword arguments, so they hold only options the
    encoder accepts. `fps` is the video decoding rate (None: the extractor's default) and
    `segments` the number of evenly spaced frames per clip for segment-based heads.
    """

    encoders: list[str]
    encoder_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_head: str = ""
    labels: list[str] = field(default_factory=list)
    fps: float | None = None
    segments: int | None = None
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoders": list(self.encoders),
            "encoder_options": {k: dict(v) for k, v in self.encoder_options.items()},
            "default_head": self.default_head,
            "labels": list(self.labels),
            "fps": self.fps,
            "segments": self.segments,
            "notes": self.notes,
        }


@dataclass
class LabelRows:
    """One clip's rows of a label stream: values [T, D], its start time and (optional) end."""

    values: np.ndarray
    t0: float = 0.0
    t_end: float | None = None


@dataclass
class LabelStream:
    """A label stream as an adapter produces it; `ingest` turns it into a store stream.

    `frame_shift_s` None means one row per clip (a class id, a per-utterance target).
    `columns` names the D columns, `classes` the meaning of class ids (0-based).
    """

    alias: str
    dim: int
    dtype: str = "float32"
    frame_shift_s: float | None = None
    columns: list[str] | None = None
    classes: list[str] | None = None
    description: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # True when the label exists for every clip of the dataset (verify then checks that).
    every_clip: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, LabelRows] = field(default_factory=dict)

    def add(self, clip_id: str, values: np.ndarray, t0: float = 0.0,
            t_end: float | None = None) -> None:
        array = np.asarray(values, dtype=self.dtype)
        if array.ndim == 1:
            array = array.reshape(1, -1) if self.frame_shift_s is None else array[:, None]
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"{self.alias}: rows of shape {array.shape}, expected [T, {self.dim}]")
        self.rows[clip_id] = LabelRows(array, float(t0), None if t_end is None else float(t_end))


@dataclass
class AuxArray:
    """A whole array that is not per clip (the REACT appropriateness matrix of a split)."""

    array: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScanResult:
    """Everything a scan found: clips, labels, aux arrays, and what it had to skip."""

    dataset: str
    data_root: str
    clips: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, LabelStream] = field(default_factory=dict)
    aux: dict[str, AuxArray] = field(default_factory=dict)
    # Clips left out on purpose (not an error), e.g. IEMOCAP utterances outside the class set.
    excluded: int = 0
    notes: list[str] = field(default_factory=list)

    def clips_per_split(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for clip in self.clips:
            split = str(clip.get("split"))
            counts[split] = counts.get(split, 0) + 1
        return counts


class SkipClip(Exception):
    """Raised while reading one clip: the clip is dropped and the message goes to the ledger."""


class Collector:
    """Gathers clips, labels and problems during a scan, so that a skipped clip leaves no trace.

    A clip's labels are handed in with the clip: either all of them land or none.
    """

    def __init__(self, result: ScanResult) -> None:
        self.result = result
        self._seen: set[str] = set()

    def stream(self, spec: LabelStream) -> LabelStream:
        return self.result.labels.setdefault(spec.alias, spec)

    def problem(self, message: str, clip_id: str | None = None, file: str | Path | None = None,
                stage: str = "ingest") -> None:
        record: dict[str, Any] = {"stage": stage, "message": one_line(message)}
        if clip_id is not None:
            record["clip_id"] = clip_id
        if file is not None:
            record["file"] = display_path(file)
        self.result.problems.append(record)

    def add(self, clip: dict[str, Any], labels: dict[str, LabelRows | np.ndarray]) -> bool:
        clip_id = clip["clip_id"]
        if clip_id in self._seen:
            self.problem(f"clip {clip_id!r} listed twice; the second entry is ignored",
                         clip_id=clip_id, file=clip.get("listed_in"))
            return False
        for alias, rows in labels.items():
            stream = self.result.labels[alias]
            if isinstance(rows, LabelRows):
                stream.add(clip_id, rows.values, rows.t0, rows.t_end)
            else:
                stream.add(clip_id, rows)
        self._seen.add(clip_id)
        self.result.clips.append({k: v for k, v in clip.items() if v is not None})
        return True

    def has(self, clip_id: str) -> bool:
        return clip_id in self._seen


class Adapter(ABC):
    """A dataset layout: `scan(data_root)` -> ScanResult. Subclasses set the class attributes."""

    name: str = ""
    title: str = ""
    # What the adapter reads, one line per file kind (shown by `affect datasets ls`).
    reads: tuple[str, ...] = ()
    recipe: Recipe = Recipe(encoders=[])

    @abstractmethod
    def scan(self, data_root: str | Path) -> ScanResult:
        """Read the layout under `data_root`; no store writes."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "reads": list(self.reads),
                "recipe": self.recipe.to_dict()}

    def _begin_scan(self, data_root: str | Path) -> tuple[Path, ScanResult, Collector]:
        """The checked root, an empty ScanResult for it, and the Collector that fills it."""
        root = self._root(data_root)
        result = ScanResult(dataset=self.name, data_root=str(root.resolve()))
        return root, result, Collector(result)

    def _root(self, data_root: str | Path) -> Path:
        from features_store.errors import UserError

        root = Path(data_root)
        if not root.is_dir():
            raise UserError(f"{root}: no such directory (the {self.name} data root)")
        return root


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def display_path(path: str | Path) -> str:
    """A path as text that is safe to print and to store as JSON, even if it is not UTF-8."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def is_utf8_name(name: str) -> bool:
    """False for names that came off the disk with bytes that are not UTF-8 (surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def split_counts_problem(collector: Collector, split: str, source: Path) -> None:
    """An empty split is worth a line in the ledger: usually a wrong or truncated list file."""
    collector.problem(f"{display_path(source)}: split {split!r} has no usable clips (empty split)",
                      file=source)
