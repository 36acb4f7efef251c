"""The per-stream clip index: which part holds each clip and at which rows.

Built either from the merged `index.json` that `finalize` writes, or, when parts were committed
since, directly from the committed manifests: readers always see every committed part and never
an uncommitted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .manifest import ClipShape, PartManifest
from .schema import check_index


@dataclass
class StreamIndex:
    parts: list[str]
    clip_ids: list[str]
    part_of: list[str]
    row_start: np.ndarray
    n_rows: np.ndarray
    t0: np.ndarray
    t_end: list[float | None]
    dim: int
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.position:
            self.position = {c: i for i, c in enumerate(self.clip_ids)}

    @classmethod
    def from_manifests(cls, manifests: list[PartManifest], dim: int) -> StreamIndex:
        """Merge manifests in commit order; a clip committed twice keeps its first commit.

        The order (commit time, then part id) is the same for every reader and for finalize,
        so two runs that raced over a clip resolve it identically everywhere.
        """
        winner: dict[str, str] = {}
        duplicates: list[tuple[str, str]] = []
        for manifest in sorted(manifests, key=lambda m: m.commit_order()):
            for entry in manifest.clips:
                if entry.clip_id in winner:
                    duplicates.append((entry.clip_id, manifest.part_id))
                else:
                    winner[entry.clip_id] = manifest.part_id
        # Rows are listed in part-id order (not commit order), so the layout readers see does
        # not depend on which worker happened to finish first.
        cols: dict[str, list] = {k: [] for k in ("clip", "part", "start", "n", "t0", "t_end")}
        for manifest in sorted(manifests, key=lambda m: m.part_id):
            for entry in manifest.clips:
                if winner[entry.clip_id] != manifest.part_id:
                    continue
                cols["clip"].append(entry.clip_id)
                cols["part"].append(manifest.part_id)
                cols["start"].append(entry.row_start)
                cols["n"].append(entry.n_rows)
                cols["t0"].append(entry.t0)
                cols["t_end"].append(entry.t_end)
        return cls(
            parts=sorted(m.part_id for m in manifests),
            clip_ids=cols["clip"],
            part_of=cols["part"],
            row_start=np.asarray(cols["start"], dtype=np.int64),
            n_rows=np.asarray(cols["n"], dtype=np.int64),
            t0=np.asarray(cols["t0"], dtype=np.float64),
            t_end=cols["t_end"],
            dim=dim,
            duplicates=duplicates,
        )

    def to_dict(self) -> dict:
        return {
            "parts": self.parts,
            "dim": self.dim,
            "clip_id": self.clip_ids,
            "part_id": self.part_of,
            "row_start": self.row_start.tolist(),
            "n_rows": self.n_rows.tolist(),
            "t0": self.t0.tolist(),
            "t_end": self.t_end,
            "duplicates": [list(d) for d in self.duplicates],
        }

    @classmethod
    def from_dict(cls, data: dict) -> StreamIndex:
        """From index.json; a MetadataError (ValueError) says which field is wrong."""
        check_index(data)
        return cls(
            parts=list(data["parts"]),
            clip_ids=list(data["clip_id"]),
            part_of=list(data["part_id"]),
            row_start=np.asarray(data["row_start"], dtype=np.int64),
            n_rows=np.asarray(data["n_rows"], dtype=np.int64),
            t0=np.asarray(data["t0"], dtype=np.float64),
            t_end=list(data["t_end"]),
            dim=int(data["dim"]),
            duplicates=[tuple(d) for d in data.get("duplicates", [])],
        )

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.position

    def shape(self, i: int) -> ClipShape:
        return ClipShape(
            clip_id=self.clip_ids[i],
            n_rows=int(self.n_rows[i]),
            dim=self.dim,
            t0=float(self.t0[i]),
            t_end=self.t_end[i],
            part_id=self.part_of[i],
            row_start=int(self.row_start[i]),
        )
