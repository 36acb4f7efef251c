"""REACT path conventions: the one place that knows how the releases name a person's folders.

The REACT 2024 release stores the Emotion csvs of NoXI and RECOLA under new person folders while
the split csvs (and the Video/Audio/3DMM folders) keep the 2023 names. The official evaluation
(`regnn/evaluation.py` of the REACT 2024 baseline) renames, in Emotion paths only:

    NoXI    Expert_video -> P1, Novice_video -> P2
    RECOLA  (group-*)    P25 -> P1, P26 -> P2, P41 -> P1, P42 -> P2, P45 -> P1, P46 -> P2

Only these names: the official table is closed (RECOLA's three dyads in REACT), so a folder it
does not list keeps its name. Dataset ingest, the metrics command and the sample writer all ask
`path_variants`, so a file found by one is found by all.
"""

from __future__ import annotations

# site -> {2023 person folder: 2024 Emotion person folder}
RENAMES_2024: dict[str, dict[str, str]] = {
    "NoXI": {"Expert_video": "P1", "Novice_video": "P2"},
    "RECOLA": {"P25": "P1", "P26": "P2", "P41": "P1", "P42": "P2", "P45": "P1", "P46": "P2"},
}


def _rename(parts: list[str], person: str) -> list[str]:
    return parts[:-2] + [person, parts[-1]]


def emotion_path_2024(clip_path: str) -> str:
    """The REACT 2024 Emotion-folder name of a clip path written with the 2023 person names."""
    parts = clip_path.strip("/").split("/")
    if len(parts) >= 3:
        renamed = RENAMES_2024.get(parts[0], {}).get(parts[-2])
        if renamed is not None and (parts[0] != "RECOLA" or parts[1].startswith("group")):
            return "/".join(_rename(parts, renamed))
    return "/".join(parts)


def _paths_2023(parts: list[str]) -> list[str]:
    """2023 names a 2024-style path (P1/P2) may have had; several for RECOLA, whose P1 was
    P25, P41 or P45 depending on the group (only one of them exists on disk)."""
    table = RENAMES_2024.get(parts[0], {})
    olds = [old for old, new in table.items() if new == parts[-2]]
    return ["/".join(_rename(parts, old)) for old in olds]


def path_variants(clip_path: str) -> list[str]:
    """The clip path as written, then as the other REACT release names it (if it differs)."""
    parts = clip_path.strip("/").split("/")
    written = "/".join(parts)
    variants = [written]
    if len(parts) >= 3:
        renamed = emotion_path_2024(written)
        variants += [renamed] if renamed != written else _paths_2023(parts)
    return variants
