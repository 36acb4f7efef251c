"""Class-probability predictions of classification heads: one CSV per split, run ensembles.

A prediction is `{"clip_ids": [...], "probabilities": [N, C]}` (softmax scores in clip order).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features_store.paths import safe_join


def write_csv(predictions: dict[str, Any], classes: Sequence[str], split: str,
              out_dir: Path) -> list[Path]:
    """`<out_dir>/<split>_predictions.csv`: clip_id, predicted class, one probability per class."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = safe_join(out_dir, split, suffix="_predictions.csv")  # --split is the user's text
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "predicted", *classes])
        for clip_id, probs in zip(predictions["clip_ids"], predictions["probabilities"]):
            writer.writerow([clip_id, classes[int(np.argmax(probs))],
                             *(f"{p:.6f}" for p in probs)])
    return [path]


def mean_of_runs(predictions: Sequence[dict[str, Any]], head: str) -> dict[str, Any]:
    """The runs' probabilities averaged per clip (every run must have predicted the same clips)."""
    from features_store.errors import UserError

    first = predictions[0]["clip_ids"]
    if any(p["clip_ids"] != first for p in predictions):
        raise UserError(f"{head}: the runs predicted different clips; ensemble runs of one split")
    return {"clip_ids": list(first),
            "probabilities": np.mean([p["probabilities"] for p in predictions], axis=0)}
