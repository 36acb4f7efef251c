"""Evaluate a folder of REACT predictions in the official layout against a REACT dataset root.

Predictions: `<pred_dir>/<split>/<site>/<group>/<pid>/<clip>/result-{0..9}.pth`, each a float
tensor [750, 25], one folder per *speaker* clip (the model reacts to the speaker).
Dataset (specs/datasets.md, react):
    <root>/<split>.csv                       header `,speaker_path,listener_path`
    <root>/<split>/Emotion/<path>.csv        header row, then 25 columns per frame
    <root>/neighbour_emotion_<split>.npy     [N, N] appropriateness, N = 2 x csv rows
Each csv row r is used in both directions: sample r has speaker = speaker_path and listener =
listener_path, sample rows + r the reverse. gt[k] is sample k's listener emotion, spk[k] its
speaker emotion. REACT 2024 renamed the Emotion person folders of NoXI (`Expert_video` /
`Novice_video`) and RECOLA (P25/P26, P41/P42, P45/P46) to `P1` / `P2`; a path missing under one
naming is looked up under the other (pipelines/datasets/react_paths.py owns the table).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heads.react_metrics import N_DIMS, naive_baselines, react_metrics
from pipelines.datasets.react_paths import path_variants

N_FRAMES = 750  # frames per REACT clip used by the challenge
N_PRED = 10  # predictions per speaker in the official layout


def _user_error(message: str) -> Exception:
    # Imported lazily: heads and pipelines must import without the store package loaded.
    from features_store.errors import UserError

    return UserError(message)


@dataclass
class ReactSplit:
    """One split of a REACT dataset, in the metrics' sample order [rows..., reversed rows...]."""

    speaker_paths: list[str]  # per sample: the clip whose predictions are evaluated
    listener_paths: list[str]
    gt: np.ndarray  # [N, T, 25] float32, listener emotion
    spk: np.ndarray  # [N, T, 25] float32, speaker emotion
    nb: np.ndarray  # [N, N] bool appropriateness


def _resolve(base: Path, rel: str, suffix: str) -> Path:
    """First existing `base/<variant><suffix>`; raises UserError naming the expected file."""
    candidates = [base / f"{v}{suffix}" for v in path_variants(rel)]
    for c in candidates:
        if c.exists():
            return c
    others = ", ".join(str(c) for c in candidates[1:])
    also = f" (also tried {others})" if others else ""
    raise _user_error(f"{candidates[0]}: file not found{also}")


def read_pairs(csv_path: Path) -> list[tuple[str, str]]:
    """(speaker_path, listener_path) per row of a REACT split csv."""
    if not csv_path.is_file():
        raise _user_error(f"{csv_path}: split csv not found")
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise _user_error(f"{csv_path}: empty file, expected header ',speaker_path,listener_path'")
    header = [h.strip() for h in rows[0]]
    if "speaker_path" not in header or "listener_path" not in header:
        raise _user_error(
            f"{csv_path}:1: header {','.join(header)!r} lacks speaker_path / listener_path"
        )
    si, li = header.index("speaker_path"), header.index("listener_path")
    pairs = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(si, li) or not row[si].strip() or not row[li].strip():
            raise _user_error(f"{csv_path}:{line}: missing speaker_path or listener_path")
        pairs.append((row[si].strip(), row[li].strip()))
    if not pairs:
        raise _user_error(f"{csv_path}: no rows after the header")
    return pairs


def read_emotion(path: Path, n_frames: int = N_FRAMES) -> np.ndarray:
    """First `n_frames` rows of an emotion csv (header row skipped) -> [n_frames, 25] float32."""
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2,
                          max_rows=n_frames)
    except ValueError as exc:
        raise _user_error(f"{path}: not a numeric csv ({str(exc).splitlines()[0]})") from None
    if data.shape[1] != N_DIMS:
        raise _user_error(f"{path}: {data.shape[1]} columns per frame, expected {N_DIMS}")
    if data.shape[0] < n_frames:
        # The frames scored per clip come from `--frames` (the challenge's 750 by default):
        # name it, and the value these clips allow, so short clips are one rerun away.
        raise _user_error(f"{path}: {data.shape[0]} frames, expected at least {n_frames} "
                          f"(the frames scored per clip, --frames; shorter clips: "
                          f"--frames {data.shape[0]})")
    if not np.isfinite(data).all():
        raise _user_error(f"{path}: contains NaN or infinite values")
    return data


def load_react_split(data_root: str | Path, split: str, n_frames: int = N_FRAMES) -> ReactSplit:
    """Read a split's pairs, emotions and appropriateness matrix (see the module docstring)."""
    root = Path(data_root)
    pairs = read_pairs(root / f"{split}.csv")
    speakers = [s for s, _ in pairs] + [li for _, li in pairs]
    listeners = [li for _, li in pairs] + [s for s, _ in pairs]
    emotion_dir = root / split / "Emotion"
    cache: dict[str, np.ndarray] = {}

    def emotion(rel: str) -> np.ndarray:
        if rel not in cache:
            cache[rel] = read_emotion(_resolve(emotion_dir, rel, ".csv"), n_frames)
        return cache[rel]

    gt = np.stack([emotion(p) for p in listeners])
    spk = np.stack([emotion(p) for p in speakers])
    nb_path = root / f"neighbour_emotion_{split}.npy"
    if not nb_path.is_file():
        raise _user_error(f"{nb_path}: appropriateness matrix not found")
    try:
        nb = np.load(nb_path, allow_pickle=False)
    except ValueError as exc:
        raise _user_error(f"{nb_path}: not a numpy array file ({exc})") from None
    n = len(speakers)
    if nb.shape != (n, n):
        raise _user_error(f"{nb_path}: shape {nb.shape}, expected ({n}, {n}) for {len(pairs)} rows")
    nb = nb.astype(bool)
    empty = np.flatnonzero(~nb.any(axis=1))
    if empty.size:
        raise _user_error(f"{nb_path}: row {int(empty[0])} marks no listener as appropriate")
    return ReactSplit(speakers, listeners, gt, spk, nb)


def _load_tensor(path: Path) -> np.ndarray:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or non-tensor file
        raise _user_error(f"{path}: cannot load a tensor ({type(exc).__name__})") from None
    if isinstance(obj, torch.Tensor):
        return obj.detach().float().numpy()
    if isinstance(obj, np.ndarray):
        return obj.astype(np.float32)
    raise _user_error(f"{path}: holds a {type(obj).__name__}, expected a tensor")


def load_predictions(
    pred_dir: str | Path,
    split: str,
    speaker_paths: list[str],
    n_frames: int = N_FRAMES,
    n_pred: int = N_PRED,
) -> np.ndarray:
    """Predictions [N, n_pred, n_frames, 25] for each speaker clip, from the official layout."""
    base = Path(pred_dir) / split
    if not base.is_dir():
        raise _user_error(f"{base}: prediction folder for split {split!r} not found")
    out = np.empty((len(speaker_paths), n_pred, n_frames, N_DIMS), dtype=np.float32)
    loaded: dict[str, np.ndarray] = {}
    for k, rel in enumerate(speaker_paths):
        if rel not in loaded:
            clip_dir = _resolve(base, rel, "")
            preds = []
            for i in range(n_pred):
                f = clip_dir / f"result-{i}.pth"
                if not f.is_file():
                    raise _user_error(f"{f}: prediction file not found")
                x = _load_tensor(f)
                if x.shape != (n_frames, N_DIMS):
                    raise _user_error(
                        f"{f}: shape {tuple(x.shape)}, expected ({n_frames}, {N_DIMS})"
                    )
                if not np.isfinite(x).all():
                    raise _user_error(f"{f}: contains NaN or infinite values")
                preds.append(x)
            loaded[rel] = np.stack(preds)
        out[k] = loaded[rel]
    return out


def evaluate_react_dir(
    pred_dir: str | Path,
    data_root: str | Path,
    split: str,
    workers: int | None = None,
    baselines: bool = True,
    n_frames: int = N_FRAMES,
) -> dict:
    """The six REACT metrics of a prediction folder, plus the naive baselines' metrics.

    Returns {FRC, FRD, S_MSE, FRVar, FRDvs, TLCC (official), TLCC_all (ours): float,
    "baselines": {name: {metric: float}}};
    "baselines" is empty when `baselines` is False.
    """
    from heads.react_metrics import MIN_FRAMES

    if n_frames < MIN_FRAMES:
        raise _user_error(f"--frames {n_frames}: REACT's TLCC metric needs sequences of at least "
                        f"{MIN_FRAMES} frames")
    data = load_react_split(data_root, split, n_frames)
    pred = load_predictions(pred_dir, split, data.speaker_paths, n_frames)
    result: dict = dict(react_metrics(pred, data.gt, data.spk, data.nb, workers=workers))
    result["baselines"] = (
        naive_baselines(data.gt, data.spk, data.nb, n_pred=pred.shape[1], workers=workers)
        if baselines
        else {}
    )
    return result
