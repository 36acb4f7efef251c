"""Configs of the transformer-LSTM family with the ABAW 2022 entries' settings as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from heads.base import (
    MAX_LAYERS,
    MAX_SIZE,
    HeadConfig,
    a_flag,
    any_text,
    fraction,
    number_in,
    one_of,
    whole_in,
)


@dataclass
class TransformerFamilyConfig(HeadConfig):
    """Shared by the four members; each member's subclass sets its own defaults.

    Defaults follow the ABAW 2022 code (Meng et al., situAI/ABAW2022_VA_Situ-RUCAIM3, branch
    RUCAIM3 @dfe41c2, and its scripts/train_*.sh), its quirks included (the `paper` profile).
    `--set profile=fixed` applies our corrections (`FIXED`):
      position_zero_row=false   row 0 of the sinusoid table is sin/cos of 0, not zeros
      init=default              PyTorch's initialisation instead of N(0, 0.02) on every Linear
      key_padding_mask=true     the encoder does not attend to padding frames
      clip_per_subnetwork=false one gradient-norm clip over the whole model
      normalize=true            z-normalise features with train-split statistics
      batching=slots            a slot takes the next video as soon as its own ends
    Our variants, each selectable with `--set` (alternatives, not corrections):
      input_relu=false                  transformer-lstm's FC without the ReLU (Linear-Dropout)
      regressor_hidden=256              one hidden layer instead of the scripts' (256, 256)
      memory_attention=normed-null-slot transformer-attention: LayerNorm(h + attn), a learned
                                        null slot the first chunk attends to, attention_dropout
      per_target_checkpoints=false      one best checkpoint by mean CCC for both targets
      postprocess=clip-then-smooth      clip to [-1, 1] before the moving average
      ensemble_of=raw                   average raw outputs, post-process the mean once

    Training: Adam (beta1 0.5), grad-norm clip 5, constant lr for `constant_epochs` then linear
    decay over the rest, 16 videos in parallel, each cut into `chunk`-frame chunks processed in
    order with one optimiser step per chunk.
    """
    # Each field's valid range (heads.base.check_config); one entry per field.
    RANGE_RULES: ClassVar[dict] = {
        "features": (lambda v: len(v) >= 1 and all(isinstance(f, str) and f for f in v),
                     "one or more stream aliases, comma-separated"),
        "labels": (any_text, "a stream alias"),
        "invalid_value": (number_in(-1e30, 1e30), "a finite number"),
        "normalize": (a_flag, "true or false"),
        "chunk": (whole_in(1, 1 << 20), "at least 1 frame"),
        "d_model": (whole_in(1, MAX_SIZE), f"in 1..{MAX_SIZE}"),
        "n_layers": (whole_in(1, MAX_LAYERS), f"in 1..{MAX_LAYERS}"),
        "n_heads": (whole_in(1, MAX_LAYERS), f"in 1..{MAX_LAYERS}"),
        "ffn": (whole_in(1, MAX_SIZE), f"in 1..{MAX_SIZE}"),
        "dropout": (fraction, "a dropout rate in [0, 1)"),
        "input_dropout": (fraction, "a dropout rate in [0, 1)"),
        "input_relu": (a_flag, "true or false"),
        "residual": (a_flag, "true or false"),
        "lstm_hidden": (whole_in(1, MAX_SIZE), f"in 1..{MAX_SIZE}"),
        "memory_pool": (whole_in(1, 1 << 20), "at least 1 frame"),
        "memory_slots": (whole_in(1, 1 << 20), "at least 1"),
        "memory_attention": (one_of("official", "normed-null-slot"),
                             "official or normed-null-slot"),
        "attention_dropout": (fraction, "a dropout rate in [0, 1)"),
        "regressor_hidden": (lambda v: all(whole_in(1, MAX_SIZE)(h) for h in v),
                             f"layer widths in 1..{MAX_SIZE}"),
        "regressor_dropout": (fraction, "a dropout rate in [0, 1)"),
        "per_target_checkpoints": (a_flag, "true or false"),
        "smooth": (a_flag, "true or false"),
        "smooth_half_widths": (lambda v: len(v) == 2 and all(whole_in(0, 1 << 20)(h) for h in v),
                               "two half-widths >= 0"),
        "postprocess": (one_of("smooth-then-clip", "clip-then-smooth"),
                        "smooth-then-clip or clip-then-smooth"),
        "ensemble_of": (one_of("postprocessed", "raw"), "postprocessed or raw"),
        "batching": (one_of("groups", "slots"), "groups or slots"),
        "key_padding_mask": (a_flag, "true or false"),
        "position_zero_row": (a_flag, "true or false"),
        "init": (one_of("normal", "default"), "normal or default"),
        "clip_per_subnetwork": (a_flag, "true or false"),
        "memory_heads": (whole_in(1, MAX_LAYERS), f"in 1..{MAX_LAYERS}"),
    }

    FIXED: ClassVar[dict[str, Any]] = {
        "position_zero_row": False,
        "init": "default",
        "key_padding_mask": True,
        "clip_per_subnetwork": False,
        "normalize": True,
        "batching": "slots",
    }

    # train.py seeds with 99 + run_idx, and the scripts' first run is run_idx 1 (the repeats of
    # an ensemble: --set seed=101, 102, ...)
    seed: int = 100
    epochs: int = 30
    constant_epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-5
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    schedule: str = "linear"
    grad_clip: float = 5.0
    # what it reads (aliases in the store); features are concatenated along D in this order
    features: tuple[str, ...] = ("hsemotion-enet-b0", "vggish", "wav2vec2-base")
    labels: str = "affwild2-va"
    invalid_value: float = -5.0
    # z-normalise features with train-split statistics; the released scripts' example passes
    # norm_features=None (no normalisation)
    normalize: bool = False
    # sequence handling
    chunk: int = 250
    # "groups": `batch_size` videos at a time, padded to the longest, every chunk of the group
    # before the next group (the released DataLoader); "slots": each of `batch_size` slots
    # takes the next video as soon as its own ends (no step spent on a finished video)
    batching: str = "groups"
    # the encoder attends to padding frames past a video's end in the released code (no
    # src_key_padding_mask); true masks them
    key_padding_mask: bool = False
    # row 0 of the released sinusoid table is zeros (padding_idx=0 in
    # get_sinusoid_encoding_table), so a chunk's first frame gets no position
    position_zero_row: bool = True
    # "normal": every Linear (FFN and attention out-projection included) N(0, 0.02) with zero
    # bias (tools.init_weights, applied to each sub-network); "default": PyTorch's
    init: str = "normal"
    # each sub-network's gradient clipped to norm `grad_clip` on its own (the released
    # backward_step loops over model_names); false: one clip over all parameters
    clip_per_subnetwork: bool = True
    # model
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    ffn: int = 1024
    dropout: float = 0.1
    input_dropout: float = 0.1
    input_relu: bool = True  # transformer-lstm FC: Linear-ReLU-Dropout (the official FcEncoder)
    residual: bool = True  # transformer-lstm: FC output + encoder output into the LSTM
    lstm_hidden: int = 256
    memory_pool: int = 10  # transformer-attention: frames mean-pooled into one memory slot
    memory_slots: int = 100
    memory_heads: int = 4  # the released net_attn has 4 heads whatever the encoder's nhead
    # "official": h + MultiheadAttention(h, memory) plainly, and a chunk without memory (the
    # first of a video) skips attention; "normed-null-slot": LayerNorm(h + attn) with a learned
    # null slot always present
    memory_attention: str = "official"
    attention_dropout: float = 0.0  # of the memory attention (official: MultiheadAttention's 0)
    regressor_hidden: tuple[int, ...] = (256, 256)
    regressor_dropout: float = 0.3
    # the best epoch kept separately for valence and arousal; each predicted from its own
    per_target_checkpoints: bool = True
    # post-processing (export): centred moving average half-widths for valence, arousal
    smooth: bool = True
    smooth_half_widths: tuple[int, int] = (50, 20)
    postprocess: str = "smooth-then-clip"  # official order; or "clip-then-smooth"
    ensemble_of: str = "postprocessed"  # each run post-processed, then averaged; or "raw"

    def __post_init__(self) -> None:
        for name, allowed in (("memory_attention", ("official", "normed-null-slot")),
                              ("batching", ("groups", "slots")),
                              ("init", ("normal", "default")),
                              ("postprocess", ("smooth-then-clip", "clip-then-smooth")),
                              ("ensemble_of", ("postprocessed", "raw"))):
            if getattr(self, name) not in allowed:
                from features_store.errors import UserError

                raise UserError(f"{name}={getattr(self, name)!r}: choose one of "
                                f"{', '.join(allowed)}")


@dataclass
class TransformerConfig(TransformerFamilyConfig):
    """`transformer`: lr 2e-5, 10 constant + 20 decaying epochs."""


@dataclass
class TransformerLSTMConfig(TransformerFamilyConfig):
    """`transformer-lstm`: as `transformer`, plus the carried LSTM(256)."""


@dataclass
class TransformerAttentionConfig(TransformerFamilyConfig):
    """`transformer-attention`: as `transformer`, plus attention over earlier chunks."""


@dataclass
class FCLSTMXLConfig(TransformerFamilyConfig):
    """`fclstm-xl`: FC 512, LSTM(512) over 100-frame chunks, regressor [512, 256]; lr 3e-5,
    3 constant + 27 decaying epochs."""

    epochs: int = 30
    constant_epochs: int = 3
    lr: float = 3e-5
    chunk: int = 100
    d_model: int = 512
    lstm_hidden: int = 512
    regressor_hidden: tuple[int, ...] = (512, 256)
