"""The store's metadata as plain dataclasses that serialise to JSON (in the manner of lhotse).

`StreamInfo` describes a stream (one encoder's output or one kind of label); `PartManifest` is the
commit marker of one part and lists where each clip's rows are; `ClipShape` is one row of a shape
manifest, answerable without reading feature data.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .fingerprint import fingerprint
from .schema import check_manifest, check_stream_info

SCHEMA_VERSION = 1
STREAM_KINDS = ("feature", "label")
LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass
class StreamInfo:
    """What a stream holds and where its values came from (its provenance).

    `frame_shift_s` is the time between rows; None means one row per clip or per utterance, whose
    span is recorded per clip as `t0`/`t_end`. The key is a fingerprint of every field that
    determines the values (not of the alias or of free-form notes).
    """

    name: str
    kind: str = "feature"
    dim: int = 0
    dtype: str = "float32"
    frame_shift_s: float | None = None
    t0: float = 0.0
    alias: str = ""
    weights: str | None = None
    weights_sha256: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    code_version: str = ""
    claims: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in STREAM_KINDS:
            raise ValueError(f"stream kind must be one of {STREAM_KINDS}, got {self.kind!r}")
        if not self.alias:
            self.alias = self.name

    def identity(self) -> dict[str, Any]:
        """The fields whose change changes the values, hence the key."""
        return {
            "name": self.name,
            "kind": self.kind,
            "dim": int(self.dim),
            "dtype": self.dtype,
            "frame_shift_s": self.frame_shift_s,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing,
            "code_version": self.code_version,
        }

    def with_key(self) -> StreamInfo:
        return dataclasses.replace(self, key=f"{self.name}-{fingerprint(self.identity(), 12)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamInfo:
        """From stream.json; a MetadataError (ValueError) says which field is wrong."""
        check_stream_info(data)
        return cls(**_known_fields(cls, data))


@dataclass
class ClipEntry:
    """Where one clip's rows sit inside a part."""

    clip_id: str
    row_start: int
    n_rows: int
    t0: float = 0.0
    t_end: float | None = None
    status: str = "ok"


@dataclass
class PartManifest:
    """Written last, after the part's array is complete: its existence commits the part."""

    part_id: str
    stream_key: str
    dim: int
    dtype: str
    n_rows: int
    clips: list[ClipEntry]
    created: str = ""
    writer: str = ""
    schema: int = SCHEMA_VERSION
    commit_time: float = 0.0  # seconds since the epoch: orders racing commits of one clip
    run_id: str = ""
    discarded: list[str] = field(default_factory=list)  # clips another part committed first
    sha256: str = ""  # of the part's rows as written (rows_bytes); "" in parts written before
    # What computed the rows besides the stream key's settings (library versions, threads,
    # device): parts of one stream must agree (`affect store verify --numerics`).
    numerics: dict[str, Any] = field(default_factory=dict)

    def commit_order(self) -> tuple[float, str]:
        """Earliest commit first, then part id: who wins when two parts hold one clip."""
        when = self.commit_time
        if not when and self.created:
            from datetime import datetime

            when = datetime.fromisoformat(self.created).timestamp()
        return (when, self.part_id)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartManifest:
        """From a manifest file; a MetadataError (ValueError) says which field is wrong."""
        check_manifest(data)
        clips = [ClipEntry(**_known_fields(ClipEntry, c)) for c in data["clips"]]
        fields = {k: v for k, v in _known_fields(cls, data).items() if k != "clips"}
        return cls(clips=clips, **fields)


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    # Fields a later version added are skipped, not a crash.
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def rows_bytes(rows: np.ndarray) -> memoryview:
    """The bytes a part checksum covers: the rows in C order, little-endian, whatever the
    machine's or the backend's byte order."""
    rows = np.ascontiguousarray(rows)
    if rows.dtype.byteorder == ">" or (rows.dtype.byteorder == "=" and not LITTLE_ENDIAN):
        rows = rows.astype(rows.dtype.newbyteorder("<"))
    return memoryview(rows.reshape(-1).view(np.uint8))


@dataclass
class ClipShape:
    """One clip of a stream, as its shape manifest reports it."""

    clip_id: str
    n_rows: int
    dim: int
    t0: float
    t_end: float | None
    part_id: str
    row_start: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.dim)
