"""Settings of the Affective-TRM head, with the public code's values as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from heads.base import (
    MAX_LAYERS,
    MAX_SIZE,
    HeadConfig,
    a_flag,
    any_text,
    number_in,
    one_of,
    whole_in,
)


@dataclass
class TRMConfig(HeadConfig):
    """Affective-TRM (CREMA-D continuous valence/arousal).

    Training as the public code: AdamW lr 5e-4, weight decay 1e-4, ReduceLROnPlateau (factor
    0.5, patience 2) on the validation loss, 25 epochs, batch 32, grad-norm clip 1.0.

    Streams are concatenated in the original's order: audio, video, text. An empty name leaves
    a stream out (`--set text=` trains on audio and video only); any stream of the store can be
    named instead (`--set text=my-sentence-encoder`). The video stream's rows are the clock:
    the other streams are put onto its timeline by the store's alignment.
    """
    # Each field's valid range (heads.base.check_config); one entry per field.
    RANGE_RULES: ClassVar[dict] = {
        "audio": (any_text, "a stream alias, or empty to leave it out"),
        "video": (lambda v: isinstance(v, str) and v != "", "a video stream alias (the clock)"),
        "text": (any_text, "a stream alias, or empty to leave it out"),
        "labels": (any_text, "a stream alias"),
        "max_frames": (whole_in(0, 1 << 24), ">= 0 (0: the whole clip)"),
        "per_frame": (a_flag, "true or false"),
        "hidden": (whole_in(1, MAX_SIZE), f"in 1..{MAX_SIZE} (divisible by heads)"),
        "heads": (whole_in(1, MAX_LAYERS), f"in 1..{MAX_LAYERS}"),
        "expansion": (number_in(0, 64, low_open=True), "in (0, 64]"),
        "layers": (whole_in(1, MAX_LAYERS), f"in 1..{MAX_LAYERS}"),
        "h_cycles": (whole_in(1, 1000), "in 1..1000"),
        "l_cycles": (whole_in(1, 1000), "in 1..1000"),
        "rms_eps": (number_in(0, 1, low_open=True), "in (0, 1]"),
        "input_norm_trainable": (a_flag, "true or false"),
        "mse_weight": (number_in(0), ">= 0"),
        "ccc_formula": (one_of("standard", "original"), "standard or original"),
    }

    epochs: int = 25
    batch_size: int = 32
    lr: float = 5e-4
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    schedule: str = "plateau"
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    plateau_metric: str = "loss"  # the public code's: validation loss ("ccc_mean": the CCC)
    grad_clip: float = 1.0
    # what it reads (aliases in the store)
    audio: str = "dasheng-base"
    video: str = "hsemotion-enet-b0"
    text: str = "embeddinggemma"
    labels: str = "cremad-va"
    max_frames: int = 0  # 0: the whole clip; 30 reproduces the original's truncation
    # recurrence over time: carried state, every frame supervised (False: the original, state
    # reset at every frame and only the last frame's output supervised)
    per_frame: bool = True
    # model (the public train.py)
    hidden: int = 512
    heads: int = 8
    expansion: float = 4.0
    layers: int = 2
    h_cycles: int = 2
    l_cycles: int = 1
    rms_eps: float = 1e-5
    # False: the public code's input LayerNorm, built outside the optimiser and so left at its
    # initial identity affine map; True (ours) trains its scale and shift with the rest
    input_norm_trainable: bool = True
    # loss: (1 - CCC_V + 1 - CCC_A) / 2 + mse_weight * MSE; "original" selects the public
    # code's CCC formula (an extra sigma_x * sigma_y factor in the numerator)
    mse_weight: float = 0.25
    ccc_formula: str = "standard"
