"""Temporal-attention CLIP head settings, with the defaults of RAPT-CLIP's training script.

Source: the public RAPT-CLIP code (`train.sh`, `main.py`, `trainer.py`, `models/`): AdamW with
weight decay 5e-4, lr 2e-5 for the temporal modules and the fusion layer, 2e-4 for the prompt
contexts, 1e-4 for the face adapter (the image encoder's 1e-6 has no counterpart here: the
features are cached, so the encoder is frozen); MultiStepLR at epochs 10 and 20 (gamma 0.1);
25 epochs of batch 4; grad-norm clip 1.0; seed 42; fp16 autocast on CUDA (`--use-amp`).

The defaults are the released code (the `paper` profile, bugs included); `FIXED` lists our
corrections, which `--set profile=fixed` turns on together (table: README, paper fidelity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from heads.base import (
    MAX_LAYERS,
    MAX_LR,
    MAX_SIZE,
    HeadConfig,
    a_flag,
    any_text,
    fraction,
    number_in,
    whole_in,
)


def prompt_set_names() -> tuple[str, ...]:
    from heads.temporal_attention.prompts import PROMPT_SETS

    return tuple(PROMPT_SETS)


@dataclass
class TemporalAttentionConfig(HeadConfig):
    # Each field's valid range (heads.base.check_config); one entry per field.
    RANGE_RULES: ClassVar[dict] = {
        "lr_prompts": (number_in(0, MAX_LR), f"a learning rate in [0, {MAX_LR:g}]"),
        "lr_adapter": (number_in(0, MAX_LR), f"a learning rate in [0, {MAX_LR:g}]"),
        "face_stream": (any_text, "a stream alias"),
        "body_stream": (any_text, "a stream alias"),
        "label_stream": (any_text, "a stream alias"),
        "segments": (whole_in(1, 4096), "in 1..4096"),
        "balanced_sampler": (a_flag, "true or false"),
        "adapter": (a_flag, "true or false"),
        "adapter_reduction": (whole_in(1, MAX_SIZE), f"in 1..{MAX_SIZE}"),
        "temporal_layers": (whole_in(1, MAX_LAYERS), f"in 1..{MAX_LAYERS}"),
        "heads": (whole_in(1, MAX_LAYERS), f"in 1..{MAX_LAYERS}"),
        "head_dim": (whole_in(1, MAX_SIZE), f"in 1..{MAX_SIZE}"),
        "mlp_dim": (whole_in(1, MAX_SIZE), f"in 1..{MAX_SIZE}"),
        "dropout": (fraction, "a dropout rate in [0, 1)"),
        "contexts": (whole_in(1, 1024), "in 1..1024"),
        "context_std": (number_in(0), ">= 0"),
        "temperature": (number_in(0, low_open=True), "> 0"),
        "prompt_set": (lambda v: v in prompt_set_names(), "a known prompt set"),
        "text_weights": (any_text, "a path, or empty"),
        "ldl_temperature": (number_in(0, low_open=True), "> 0"),
        "mi_weight": (number_in(0), ">= 0"),
        "dc_weight": (number_in(0), ">= 0"),
        "mi_temperature": (number_in(0, low_open=True), "> 0"),
        "aux_warmup_epochs": (whole_in(0), ">= 0"),
        "aux_ramp_epochs": (whole_in(0), ">= 0"),
        "mixup_alpha": (number_in(0), ">= 0 (0 disables mixup)"),
        "ldl_targets": (lambda v: v in ("prompt-mean", "renormalised"),
                        "prompt-mean or renormalised"),
        "select_metric": (lambda v: v in ("UAR_paper", "UAR"), "UAR_paper or UAR"),
        "views": (lambda v: v in ("auto", "none"), "auto or none"),
    }

    FIXED: ClassVar[dict[str, Any]] = {
        # LDL soft targets from the renormalised class prompt features (a unit vector per
        # class), not the shorter mean of the normalised prompt features the released code uses
        "ldl_targets": "renormalised",
        # CLIP input as CLIP was trained on it (open_clip's eval transform: mean/std
        # normalised, shortest side resize and centre crop), not [0,1] pixels squashed
        "face_stream": "clip-vit-b16@face",
        "body_stream": "clip-vit-b16@body",
        # best checkpoint by the UAR over the classes present in the truth
        "select_metric": "UAR",
        # mixup as train.sh asks (--mixup-alpha 0.2): main.py never passes it to its Trainer,
        # whose default 0.0 turns mixup off
        "mixup_alpha": 0.2,
    }

    epochs: int = 25
    batch_size: int = 4
    lr: float = 2e-5  # temporal modules and fusion
    lr_prompts: float = 2e-4  # CoOp context vectors
    lr_adapter: float = 1e-4  # face adapter
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    milestones: tuple[int, ...] = (10, 20)
    gamma: float = 0.1
    grad_clip: float = 1.0
    seed: int = 42
    amp: str = "fp16"  # the released trainer's torch.cuda.amp.autocast (CUDA only)
    # what it reads: the extraction requests of the RAER recipe (CLIP on the released loader's
    # input: extract/encoders/clip.py `preprocess=rapt`) and the class label stream
    face_stream: str = "clip-vit-b16@rapt@face"
    body_stream: str = "clip-vit-b16@rapt@body"
    label_stream: str = "raer-class"
    # augmented views of the face and body streams (`affect extract --views`): "auto" draws one
    # of the views the store holds (or the plain stream) per clip and stream each epoch, as the
    # released loader draws a rotation and a flip per clip; "none" trains on the plain streams
    views: str = "auto"
    # sampling: `segments` frames per clip, a random one per segment in training, the centre
    # one in evaluation (TSN sampling with duration 1); class-balanced draws with replacement
    segments: int = 16
    balanced_sampler: bool = True
    # model
    adapter: bool = True
    adapter_reduction: int = 4
    temporal_layers: int = 1
    heads: int = 8
    head_dim: int = 64
    mlp_dim: int = 1024
    dropout: float = 0.1
    # text side: class-specific CoOp contexts, prompt ensemble, frozen CLIP text tower
    contexts: int = 8
    context_std: float = 0.02
    temperature: float = 0.07
    # key of heads.temporal_attention.prompts.PROMPT_SETS: the released text, or our "raer"
    prompt_set: str = "rapt-clip"
    # Weights of the text tower: "" = the same weights as the cached image stream (from its
    # provenance); a path overrides (an open_clip checkpoint of that architecture).
    text_weights: str = ""
    # losses
    # LDL soft targets softmax(Tc Tc^T [y] / T): Tc = "prompt-mean", the mean of each class's
    # normalised prompt features (released), or "renormalised", that mean made unit length
    ldl_targets: str = "prompt-mean"
    ldl_temperature: float = 1.0
    mi_weight: float = 0.1
    dc_weight: float = 0.1
    mi_temperature: float = 0.07
    aux_warmup_epochs: int = 5  # MI and DC weights are 0 before this epoch (0-based) ...
    aux_ramp_epochs: int = 10  # ... then ramp linearly to their weights over this many epochs
    # 0 disables mixup: the released run has none (train.sh's 0.2 never reaches the Trainer)
    mixup_alpha: float = 0.0
    # the validation metric that picks the best checkpoint: "UAR_paper" (the released trainer's
    # UAR over the union of true and predicted classes) or "UAR" (over the true classes)
    select_metric: str = "UAR_paper"
