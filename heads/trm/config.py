"""Settings of the Affective-TRM head: the defaults are the released code (the `paper` profile),
its quirks included; `FIXED` lists our corrections (`--set profile=fixed`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from heads.base import (
    MAX_LAYERS,
    MAX_SIZE,
    HeadConfig,
    a_flag,
    any_text,
    number_in,
    whole_in,
)

SAMPLINGS = ("released", "clock")
LAST_STEPS = ("batch", "clip")
CCC_FORMULAS = ("standard", "original")


@dataclass
class TRMConfig(HeadConfig):
    """Affective-TRM (CREMA-D continuous valence/arousal).

    Training as the released code (`train.py`, `src/training/engine.py`): seed 42, fp32, AdamW
    lr 5e-4, weight decay 1e-4, ReduceLROnPlateau (factor 0.5, patience 2) on the validation
    loss, 25 epochs, batch 32, grad-norm clip 1.0, and the final epoch's weights kept.

    Streams are concatenated in the original's order: audio, video, text. An empty name leaves
    a stream out (`--set text=` trains on audio and video only); any stream of the store can be
    named instead (`--set text=my-sentence-encoder`).
    """

    # our corrections of the released code, all at once with `--set profile=fixed`
    FIXED: ClassVar[dict[str, Any]] = {
        "sampling": "clock", "max_frames": 0, "per_frame": True, "last_step": "clip",
        "halt_exploration": 0.0, "input_norm_trainable": True, "ccc_formula": "standard",
        "keep_checkpoint": "best",
    }

    seed: int = 42
    keep_checkpoint: str = "last"  # the released script saves the model after the last epoch
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
    # Which rows make a clip's input sequence.
    # "released": as the released preprocessing: `max_frames` video rows evenly spread over the
    #   whole clip (np.linspace over its frames, truncated to int), paired by index with the
    #   audio stream's first rows (the sequence is as long as the shorter of the two), the text
    #   repeated; a video row of zeros (no face found) takes the previous row's value.
    # "clock" (ours): every stream put onto the video stream's timeline by time (the store's
    #   alignment); `max_frames` > 0 keeps only the first `max_frames` frames of it (30 frames
    #   are the first 1.2 s of a 25 fps clip: this is not the released sampling).
    sampling: str = "released"
    max_frames: int = 30  # "released": frames sampled (0: 30); "clock": 0 is the whole clip
    # recurrence over time: False (released: halt_max_steps=1) starts every frame from the
    # initial state and supervises only the last step's output; True (ours) carries the state
    # from frame to frame and supervises every frame
    per_frame: bool = False
    # the step whose output is the clip's: "batch" (released) the batch's last padded step, so
    # a clip shorter than the longest of its batch is predicted from zero input; "clip" (ours)
    # each clip's own last frame
    last_step: str = "batch"
    # released training (halt_exploration_prob=0.05): after each step a sample is not halted
    # with this probability, so its next step goes on from the carried state on the same
    # (earlier) frame instead of the next one; only training draws it
    halt_exploration: float = 0.05
    # model (the public train.py)
    hidden: int = 512
    heads: int = 8
    expansion: float = 4.0
    layers: int = 2
    h_cycles: int = 2
    l_cycles: int = 1
    rms_eps: float = 1e-5
    # False (released): the input LayerNorm is built outside the optimiser and so stays at its
    # initial identity affine map; True (ours) trains its scale and shift with the rest
    input_norm_trainable: bool = False
    # loss: (1 - CCC_V + 1 - CCC_A) / 2 + mse_weight * MSE; "original" (released) has an extra
    # sigma_x * sigma_y factor in the CCC's numerator and falls back to the MSE for a batch of
    # one clip; "standard" is Lin's CCC
    mse_weight: float = 0.25
    ccc_formula: str = "original"

    RANGE_RULES: ClassVar[dict[str, Any]] = {
        "sampling": (lambda v: v in SAMPLINGS, " or ".join(SAMPLINGS)),
        "last_step": (lambda v: v in LAST_STEPS, " or ".join(LAST_STEPS)),
        "ccc_formula": (lambda v: v in CCC_FORMULAS, " or ".join(CCC_FORMULAS)),
        "max_frames": (whole_in(0, 1 << 24), ">= 0"),
        "halt_exploration": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "audio": (any_text, "a stream alias, or empty to leave it out"),
        "video": (lambda v: isinstance(v, str) and v != "", "a video stream alias (the clock)"),
        "text": (any_text, "a stream alias, or empty to leave it out"),
        "labels": (any_text, "a stream alias"),
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
    }
