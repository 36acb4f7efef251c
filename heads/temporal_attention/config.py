"""Temporal-attention CLIP head settings, with the defaults of RAPT-CLIP's training script.

Source: the public RAPT-CLIP code (`train.sh`, `main.py`, `trainer.py`, `models/`): AdamW with
weight decay 5e-4, lr 2e-5 for the temporal modules and the fusion layer, 2e-4 for the prompt
contexts, 1e-4 for the face adapter (the image encoder's 1e-6 has no counterpart here: the
features are cached, so the encoder is frozen); MultiStepLR at epochs 10 and 20 (gamma 0.1);
25 epochs of batch 4; grad-norm clip 1.0; seed 42.
"""

from __future__ import annotations

from dataclasses import dataclass

from heads.base import HeadConfig


@dataclass
class TemporalAttentionConfig(HeadConfig):
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
    # what it reads: the extraction requests of the RAER recipe and the class label stream
    face_stream: str = "clip-vit-b16@face"
    body_stream: str = "clip-vit-b16@body"
    label_stream: str = "raer-class"
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
    prompt_set: str = "raer"  # key of heads.temporal_attention.prompts.PROMPT_SETS
    # Weights of the text tower: "" = the same weights as the cached image stream (from its
    # provenance); a path overrides (an open_clip checkpoint of that architecture).
    text_weights: str = ""
    # losses
    ldl_temperature: float = 1.0
    mi_weight: float = 0.1
    dc_weight: float = 0.1
    mi_temperature: float = 0.07
    aux_warmup_epochs: int = 5  # MI and DC weights are 0 before this epoch (0-based) ...
    aux_ramp_epochs: int = 10  # ... then ramp linearly to their weights over this many epochs
    mixup_alpha: float = 0.2  # 0 disables mixup
