"""REACT 2023/2024 (multiple appropriate facial reaction generation): NoXI, RECOLA, UDIVA dyads.

Layout as distributed::

    <root>/{train,val,test}.csv                  ,speaker_path,listener_path (one row per dyad)
    <root>/neighbour_emotion_{split}.npy         [2L, 2L] appropriateness over [speakers, listeners]
    <root>/<split>/Video_files/<path>.mp4        or a frame folder <path>/1.png ... 751.png
    <root>/<split>/Audio_files/<path>.wav
    <root>/<split>/Emotion/<path>.csv            header row, 25 columns per frame
    <root>/<split>/3D_FV_files/<path>.npy        58-d 3DMM coefficients per frame

`<path>` is the `site/group/person/clip` path of the split csv (UDIVA has one more level) and is
the clip id, so an export reproduces the baseline tree. Every person-clip named in a split csv is
a clip. REACT 2024 renamed the emotion folders of NoXI (Expert_video/Novice_video -> P1/P2) and
RECOLA (P25/P26, P41/P42, P45/P46 -> P1/P2); both conventions are read (react_paths.py owns the
table).

Labels are capped at 750 frames (30 s at 25 fps), as the baseline reads them; a shorter clip keeps
its own length. Clip and label may differ by one frame (the baseline's frame folders hold 751
frames for 750 label rows); more than that is an error.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    SPLITS,
    Adapter,
    AuxArray,
    Collector,
    LabelRows,
    LabelStream,
    Recipe,
    ScanResult,
    SkipClip,
    display_path,
    split_counts_problem,
)
from .files import frame_images, probe_video, read_lines
from .react_paths import path_variants

FPS = 25.0
MAX_FRAMES = 750
FRAME_TOLERANCE = 1
EMOTION_COLUMNS = (
    [f"AU{n}" for n in (1, 2, 4, 6, 7, 9, 10, 12, 14, 15, 17, 23, 24, 25, 26)]
    + ["valence", "arousal"]
    + ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
)
N_EMOTION = 25
N_3DMM = 58
def _first_existing(base: Path, clip_path: str, suffix: str) -> Path | None:
    for variant in path_variants(clip_path):
        candidate = base / f"{variant}{suffix}"
        if candidate.exists():
            return candidate
    return None


def read_emotion_csv(path: Path) -> np.ndarray:
    """[T, 25] reaction attributes; a header row first. A leading index column is dropped."""
    lines = [ln for ln in read_lines(path) if ln.strip()]
    if len(lines) < 2:
        raise SkipClip(f"{display_path(path)}: no frames after the header row")
    header = lines[0].split(",")
    drop_first = len(header) == N_EMOTION + 1 and header[0].strip() == ""
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        if drop_first:
            fields = fields[1:]
        if len(fields) != N_EMOTION:
            raise SkipClip(f"{display_path(path)}: line {line_no}: expected {N_EMOTION} values, "
                           f"got {len(fields)}")
        rows.append(fields)
    try:
        values = np.array(rows, dtype=np.float32)
    except ValueError:
        for line_no, fields in enumerate(rows, start=2):
            try:
                np.array(fields, dtype=np.float32)
            except ValueError:
                raise SkipClip(f"{display_path(path)}: line {line_no}: not a number in "
                               f"{','.join(fields)[:60]!r}") from None
        raise
    if not np.isfinite(values).all():
        bad = int(np.argwhere(~np.isfinite(values))[0][0]) + 2
        raise SkipClip(f"{display_path(path)}: line {bad}: NaN or infinite value")
    return values


class ReactAdapter(Adapter):
    name = "react"
    title = "REACT 2023/2024 dyadic facial reactions (NoXI, RECOLA, UDIVA)"
    reads = (
        "{train,val,test}.csv: dyads (speaker_path, listener_path), each used both ways",
        "<split>/Video_files/<path>.mp4 or frame folder <path>/1.png...; "
        "<split>/Audio_files/<path>.wav",
        "<split>/Emotion/<path>.csv: 25 reaction attributes per frame (2023 or 2024 names)",
        "<split>/3D_FV_files/<path>.npy: 58-d 3DMM per frame (optional)",
        "neighbour_emotion_<split>.npy: [2L, 2L] appropriateness matrix",
    )
    recipe = Recipe(
        encoders=["swin-t", "vggish-react", "wav2vec2-base"],
        default_head="regnn",
        labels=["react-emotion", "react-3dmm"],
        fps=FPS,
        notes="Labels at 25 fps, 750 frames per clip; appropriateness in aux "
              "react/neighbours/<split>. Swin-T should load the FER-trained REACT checkpoint "
              "(--weights PATH).",
    )

    def scan(self, data_root: str | Path) -> ScanResult:
        root, result, out = self._begin_scan(data_root)
        out.stream(LabelStream(
            alias="react-emotion", dim=N_EMOTION, frame_shift_s=1 / FPS,
            columns=EMOTION_COLUMNS, description="facial reaction attributes per frame: "
            "15 AU occurrences, valence, arousal, 8 expression probabilities",
            preprocessing={"max_frames": MAX_FRAMES, "source": "Emotion/<path>.csv"}))
        out.stream(LabelStream(
            alias="react-3dmm", dim=N_3DMM, frame_shift_s=1 / FPS, every_clip=False,
            description="3DMM coefficients per frame (for rendering)",
            preprocessing={"max_frames": MAX_FRAMES, "source": "3D_FV_files/<path>.npy"}))
        csvs = [(s, root / f"{s}.csv") for s in SPLITS if (root / f"{s}.csv").is_file()]
        if not csvs:
            from features_store.errors import UserError

            raise UserError(f"{root}: no train.csv, val.csv or test.csv: not a REACT data root")
        for split, csv_path in csvs:
            self._scan_split(root, split, csv_path, out)
        return result

    # One split ---------------------------------------------------------------------------
    def _scan_split(self, root: Path, split: str, csv_path: Path, out: Collector) -> None:
        rows = self._read_split_csv(csv_path, out)  # [(speaker, listener) or None, ...]
        clip_rows: dict[str, tuple[str, int]] = {}  # clip -> (partner, csv line)
        for row in rows:
            if row is not None:
                speaker, listener, line_no = row
                clip_rows.setdefault(speaker, (listener, line_no))
                clip_rows.setdefault(listener, (speaker, line_no))
        ingested = set()
        for clip_path, (partner, line_no) in clip_rows.items():
            try:
                clip, labels = self._read_clip(root, split, clip_path, partner, out)
            except SkipClip as exc:
                out.problem(str(exc), clip_id=clip_path)
                continue
            clip["listed_in"] = f"{csv_path.name}:{line_no}"
            if out.add(clip, labels):
                ingested.add(clip_path)
        if not ingested:
            split_counts_problem(out, split, csv_path)
            return
        self._read_neighbours(root, split, rows, ingested, out)

    def _read_split_csv(self, csv_path: Path, out: Collector) -> list[tuple[str, str, int] | None]:
        reader = csv.reader(read_lines(csv_path))
        header = [h.strip() for h in next(reader, [])]
        if not header:
            return []
        if "speaker_path" not in header or "listener_path" not in header:
            out.problem(f"{display_path(csv_path)}: line 1: header must name speaker_path and "
                        f"listener_path, got {','.join(header)[:80]!r}", file=csv_path)
            return []
        i_spk, i_lis = header.index("speaker_path"), header.index("listener_path")
        rows: list[tuple[str, str, int] | None] = []
        for fields in reader:
            line_no = reader.line_num
            if not fields or not any(f.strip() for f in fields):
                continue  # blank lines are not rows (pandas skips them too)
            if len(fields) != len(header):
                out.problem(f"{display_path(csv_path)}: line {line_no}: expected {len(header)} "
                            f"fields, got {len(fields)}", file=csv_path)
                rows.append(None)
                continue
            speaker, listener = fields[i_spk].strip().strip("/"), fields[i_lis].strip().strip("/")
            bad = next((p for p in (speaker, listener) if not _valid_clip_path(p)), None)
            if bad is not None:
                out.problem(f"{display_path(csv_path)}: line {line_no}: {bad!r} is not a "
                            "site/group/person/clip path", file=csv_path)
                rows.append(None)
                continue
            rows.append((speaker, listener, line_no))
        return rows

    def _read_clip(self, root: Path, split: str, clip_path: str, partner: str,
                   out: Collector) -> tuple[dict[str, Any], dict[str, Any]]:
        base = root / split
        record: dict[str, Any] = {"clip_id": clip_path, "split": split, "dataset": self.name}
        video = _first_existing(base / "Video_files", clip_path, ".mp4")
        folder = None if video else _first_existing(base / "Video_files", clip_path, "")
        if video is not None:
            probe = probe_video(video)
            n_video, fps = probe.n_frames, probe.fps
            record["video"] = str(video.resolve())
        elif folder is not None and folder.is_dir() and frame_images(folder):
            n_video, fps = len(frame_images(folder)), FPS
            record["frames"] = str(folder.resolve())
        else:
            raise SkipClip(f"{display_path(base / 'Video_files' / clip_path)}.mp4: missing video "
                           "(no .mp4 and no frame folder)")
        audio = _first_existing(base / "Audio_files", clip_path, ".wav")
        if audio is None:
            raise SkipClip(f"{display_path(base / 'Audio_files' / clip_path)}.wav: missing audio")
        record["audio"] = str(audio.resolve())
        emotion_path = _first_existing(base / "Emotion", clip_path, ".csv")
        if emotion_path is None:
            raise SkipClip(f"{display_path(base / 'Emotion' / clip_path)}.csv: missing emotion "
                           "labels")
        emotion = read_emotion_csv(emotion_path)
        if abs(len(emotion) - n_video) > FRAME_TOLERANCE:
            raise SkipClip(f"{display_path(emotion_path)}: {len(emotion)} label frames but the "
                           f"video has {n_video} frames")
        n = min(len(emotion), n_video, MAX_FRAMES)
        labels: dict[str, Any] = {"react-emotion": LabelRows(emotion[:n], 0.0, n / FPS)}
        threedmm_path = _first_existing(base / "3D_FV_files", clip_path, ".npy")
        if threedmm_path is not None:
            coeffs = self._read_3dmm(threedmm_path, n, clip_path, out)
            if coeffs is not None:
                labels["react-3dmm"] = LabelRows(coeffs, 0.0, n / FPS)
        elif (base / "3D_FV_files").is_dir():
            out.problem(f"{display_path(base / '3D_FV_files' / clip_path)}.npy: missing 3DMM "
                        "coefficients (clip kept without react-3dmm)", clip_id=clip_path)
        parts = clip_path.split("/")
        record.update(
            source=record.get("video") or record.get("frames"),
            duration=n_video / fps,
            fps=fps,
            n_frames=n_video,
            speaker="/".join(parts[:-1]),
            site=parts[0],
            group="/".join(parts[1:-2]),
            person=parts[-2],
            clip_index=parts[-1],
            partner=partner,
            emotion_file=str(emotion_path.resolve()),
        )
        return record, labels

    def _read_3dmm(self, path: Path, n: int, clip_id: str, out: Collector) -> np.ndarray | None:
        try:
            coeffs = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            out.problem(f"{display_path(path)}: cannot read 3DMM array ({exc}); clip kept "
                        "without react-3dmm", clip_id=clip_id)
            return None
        if coeffs.size % N_3DMM or coeffs.shape[-1] != N_3DMM:
            out.problem(f"{display_path(path)}: 3DMM array of shape {coeffs.shape}, expected "
                        f"[T, {N_3DMM}]; clip kept without react-3dmm", clip_id=clip_id)
            return None
        coeffs = coeffs.reshape(-1, N_3DMM).astype(np.float32)
        if abs(len(coeffs) - n) > FRAME_TOLERANCE and len(coeffs) < n:
            out.problem(f"{display_path(path)}: {len(coeffs)} 3DMM frames for {n} label frames; "
                        "clip kept without react-3dmm", clip_id=clip_id)
            return None
        if not np.isfinite(coeffs).all():
            out.problem(f"{display_path(path)}: NaN or infinite 3DMM values; clip kept without "
                        "react-3dmm", clip_id=clip_id)
            return None
        coeffs = coeffs[:n]
        if len(coeffs) < n:  # one frame short: repeat the last, as the video/label tolerance
            coeffs = np.concatenate([coeffs, coeffs[-1:].repeat(n - len(coeffs), 0)])
        return coeffs

    def _read_neighbours(self, root: Path, split: str, rows: list, ingested: set[str],
                         out: Collector) -> None:
        """The split's appropriateness matrix, restricted to dyads whose two clips are ingested.

        Sample i < L is (speaker_i -> listener_i), sample L + i the same dyad reversed;
        `neighbours[k, j]` says listener reaction j is appropriate for speaker k.
        """
        path = next((p for p in (root / f"neighbour_emotion_{split}.npy",
                                 root / split / f"neighbour_emotion_{split}.npy") if p.is_file()),
                    None)
        if path is None:
            out.problem(f"{display_path(root / f'neighbour_emotion_{split}.npy')}: missing "
                        f"appropriateness matrix of split {split!r}", file=root)
            return
        try:
            matrix = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            out.problem(f"{display_path(path)}: cannot read ({exc})", file=path)
            return
        n_rows = len(rows)
        if matrix.shape != (2 * n_rows, 2 * n_rows):
            # A malformed csv line may be one the matrix never counted (an edit after release).
            rows = [row for row in rows if row is not None]
            if matrix.shape != (2 * len(rows), 2 * len(rows)):
                out.problem(f"{display_path(path)}: shape {matrix.shape}, but {split}.csv has "
                            f"{n_rows} rows (expected [{2 * n_rows}, {2 * n_rows}])", file=path)
                return
            n_rows = len(rows)
        keep = [i for i, row in enumerate(rows)
                if row is not None and row[0] in ingested and row[1] in ingested]
        index = np.array(keep + [i + n_rows for i in keep], dtype=np.int64)
        sub = np.asarray(matrix)[np.ix_(index, index)] != 0
        speakers = [rows[i][0] for i in keep]
        listeners = [rows[i][1] for i in keep]
        out.result.aux[f"react/neighbours/{split}"] = AuxArray(sub, {
            "clip_ids": speakers + listeners,
            "listener_ids": listeners + speakers,
            "csv_lines": [rows[i][2] for i in keep],
            "split": split,
            "source": str(path.resolve()),
            "meaning": "matrix[k, j]: the reaction of listener_ids[j] is appropriate for "
                       "speaker clip_ids[k]",
        })


def _valid_clip_path(path: str) -> bool:
    parts = path.split("/")
    return len(parts) >= 4 and all(p and p not in (".", "..") for p in parts)
