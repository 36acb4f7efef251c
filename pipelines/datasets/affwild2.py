"""Aff-Wild2 valence-arousal (ABAW VA challenge): per-frame labels at each video's own rate.

Layout as distributed::

    <root>/**/<vid>.mp4|.avi                           raw videos (batch folders, any depth)
    <root>/**/VA_Estimation_Challenge/Train_Set/<vid>.txt
    <root>/**/VA_Estimation_Challenge/Validation_Set/<vid>.txt
    <root>/**/cropped_aligned/<clip>/00001.jpg         optional face crops (recorded if present)

A label file has a header line then "valence,arousal" per video frame; -5 marks a frame without
a valid label and is kept as is (heads mask it). A video with two annotated people has
`<vid>_left.txt` and `<vid>_right.txt`: two clips sharing the video.

Frame rates differ between videos (30 fps typical), so each clip's label rows carry their own
time span (t_end = n / fps) and the clip record its `fps`; the stream's nominal `frame_shift_s`
is 1/30 s, the rate of most videos. Labels and video may differ by up to 2 frames (an artefact
of how the challenge annotations were cut); more than that is an error.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    Adapter,
    LabelRows,
    LabelStream,
    Recipe,
    ScanResult,
    SkipClip,
    display_path,
    split_counts_problem,
)
from .files import VIDEO_SUFFIXES, VideoProbe, find_files, list_dir, probe_video, read_lines

SETS = {"Train_Set": "train", "Validation_Set": "val", "Test_Set": "test"}
INVALID = -5.0
FRAME_TOLERANCE = 2
# The stream's nominal rate (most Aff-Wild2 videos); clips at other rates carry t_end = n / fps.
NOMINAL_FPS = 30.0


def read_va_txt(path: Path) -> np.ndarray:
    """[T, 2] valence, arousal; the header line is checked, -5 rows kept."""
    lines = read_lines(path)
    if not lines or "valence" not in lines[0].lower():
        raise SkipClip(f"{display_path(path)}: line 1: expected the header 'valence,arousal'")
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            if len(fields) != 2:
                raise ValueError
            v, a = float(fields[0]), float(fields[1])
        except ValueError:
            raise SkipClip(f"{display_path(path)}: line {line_no}: expected 'valence,arousal', "
                           f"got {line.strip()[:40]!r}") from None
        if not (np.isfinite(v) and np.isfinite(a)):
            raise SkipClip(f"{display_path(path)}: line {line_no}: NaN or infinite value")
        rows.append((v, a))
    if not rows:
        raise SkipClip(f"{display_path(path)}: no label rows after the header")
    values = np.asarray(rows, dtype=np.float32)
    valid = (values != INVALID).all(axis=1)
    if (np.abs(values[valid]) > 1.0 + 1e-6).any():
        bad = int(np.argwhere(valid & (np.abs(values) > 1.0 + 1e-6).any(axis=1))[0][0]) + 2
        raise SkipClip(f"{display_path(path)}: line {bad}: value outside [-1, 1] (and not -5)")
    return values


class AffWild2Adapter(Adapter):
    name = "affwild2"
    title = "Aff-Wild2 valence/arousal (ABAW VA challenge)"
    reads = (
        "**/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<vid>[_left|_right].txt",
        "**/<vid>.mp4|.avi: raw videos (real frame rate read from the file)",
        "**/cropped_aligned/<clip>/: face crops, recorded as face_frames when present",
    )
    recipe = Recipe(
        encoders=["hsemotion-enet-b0", "vggish", "wav2vec2-base"],
        default_head="transformer-lstm",
        labels=["affwild2-va"],
        fps=NOMINAL_FPS,
        notes="Features are aligned onto each clip's label timeline (its own frame rate: clip "
              "field fps); -5 marks invalid label frames.",
    )

    def scan(self, data_root: str | Path) -> ScanResult:
        from features_store.errors import UserError

        root, result, out = self._begin_scan(data_root)
        out.stream(LabelStream(
            alias="affwild2-va", dim=2, frame_shift_s=1 / NOMINAL_FPS,
            columns=["valence", "arousal"],
            description="per-frame valence and arousal in [-1, 1]; -5 = invalid frame",
            preprocessing={"source": "VA_Estimation_Challenge/*.txt", "invalid": INVALID},
            extra={"invalid_value": INVALID, "per_clip_frame_rate": True,
                   "frame_rate_field": "fps"}))
        challenge = _shallow_dirs(root, "VA_Estimation_Challenge")
        if not challenge:
            raise UserError(f"{root}: no VA_Estimation_Challenge folder: not an Aff-Wild2 root")
        ann = challenge[0]
        # The face-crop trees hold millions of images and no videos: not walked.
        videos = find_files(root, VIDEO_SUFFIXES, out,
                            skip_dirs=(ann.name, "cropped_aligned", "cropped"))
        crops = next(iter(_shallow_dirs(root, "cropped_aligned")), None)
        probes: dict[Path, VideoProbe] = {}
        for set_name, split in SETS.items():
            folder = ann / set_name
            if not folder.is_dir():
                continue
            added = 0
            for name in list_dir(folder, out):
                if not name.endswith(".txt"):
                    continue
                clip_id = name[:-4]
                try:
                    clip, labels = self._read_clip(folder / name, clip_id, split, videos, crops,
                                                   probes)
                except SkipClip as exc:
                    out.problem(str(exc), clip_id=clip_id)
                    continue
                added += out.add(clip, labels)
            if not added:
                split_counts_problem(out, split, folder)
        rates = Counter(round(c["fps"], 3) for c in result.clips)
        if set(rates) - {NOMINAL_FPS}:
            result.notes.append("frame rates " + ", ".join(
                f"{r:g} fps: {n} clips" for r, n in sorted(rates.items()))
                + "; each clip's labels follow its own rate (clip field fps)")
        return result

    def _read_clip(self, label_path: Path, clip_id: str, split: str, videos: dict[str, Path],
                   crops: Path | None, probes: dict[Path, VideoProbe]
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
        person = None
        video_id = clip_id
        for side in ("left", "right"):
            if clip_id.endswith(f"_{side}"):
                person, video_id = side, clip_id[: -len(side) - 1]
        video = videos.get(clip_id) or videos.get(video_id)
        if video is None:
            raise SkipClip(f"{display_path(label_path)}: missing video {video_id}.mp4/.avi under "
                           "the data root")
        if video not in probes:
            probes[video] = probe_video(video)
        probe = probes[video]
        values = read_va_txt(label_path)
        if abs(len(values) - probe.n_frames) > FRAME_TOLERANCE:
            raise SkipClip(f"{display_path(label_path)}: {len(values)} label frames but "
                           f"{display_path(video)} has {probe.n_frames} frames")
        record: dict[str, Any] = {
            "clip_id": clip_id,
            "split": split,
            "dataset": self.name,
            "video": str(video.resolve()),
            "audio": str(video.resolve()) if probe.has_audio else None,
            "source": str(video.resolve()),
            "duration": probe.n_frames / probe.fps,
            "fps": probe.fps,
            "n_frames": probe.n_frames,
            "speaker": clip_id,
            "video_id": video_id,
            "person": person,
            "label_file": str(label_path.resolve()),
        }
        if crops is not None and (crops / clip_id).is_dir():
            record["face_frames"] = str((crops / clip_id).resolve())
        labels = {"affwild2-va": LabelRows(values, 0.0, len(values) / probe.fps)}
        return record, labels


def _shallow_dirs(root: Path, name: str, depth: int = 3) -> list[Path]:
    """Folders called `name` at most `depth` levels down (not a full walk: the face-crop tree
    alone holds millions of files)."""
    found: list[Path] = []
    for level in range(depth + 1):
        found += sorted(p for p in root.glob("/".join(["*"] * level + [name])) if p.is_dir())
    return found
