"""`verify --numerics`: streams whose parts were computed by different numerics.

A stream key promises bit-equal values for one library stack (README, "What a stream key
promises"). What the key leaves out, the library versions, and what each writer actually ran
with, is recorded in every part's manifest (`numerics`); parts of one stream that disagree may
differ in their last bits, and are listed here so a user can re-extract them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .store import FeatureStore


@dataclass
class MixedNumerics:
    alias: str
    key: str
    parts_by_numerics: dict[str, list[str]]  # canonical JSON of the numerics -> part ids

    def describe(self) -> str:
        groups = "; ".join(f"{numerics} in {len(parts)} part(s) ({', '.join(parts[:3])}"
                           f"{' ...' if len(parts) > 3 else ''})"
                           for numerics, parts in sorted(self.parts_by_numerics.items()))
        return (f"stream {self.alias} ({self.key}): parts from "
                f"{len(self.parts_by_numerics)} different numerics: {groups}")


def mixed_numerics(store: FeatureStore) -> list[MixedNumerics]:
    """Every stream whose committed parts do not all record the same numerics."""
    store.refresh()
    found = []
    for info in store.streams():
        groups: dict[str, list[str]] = {}
        for manifest in store.manifests(info.key):
            numerics = json.dumps(manifest.numerics, sort_keys=True)
            groups.setdefault(numerics, []).append(manifest.part_id)
        if len(groups) > 1:
            found.append(MixedNumerics(info.alias, info.key,
                                       {k: sorted(v) for k, v in groups.items()}))
    return found
