"""The REACT 2024 baseline's released REGNN weights, mapped onto our `Regnn` (`affect import-run`).

The released training script saves the whole `MHP` module; its state dict (what a user saves
with `torch.save(model.state_dict(), ...)`) names
    perceptual_processor.fuse_model.*    MULTModel: proj_v / proj_a (kernel-1 convs), the
                                         cross-modal `trans_v_with_a` and self-attention
                                         `trans_v_mem` (fairseq encoders), proj1, proj2, out_layer
    cognitive_processor.*                convert_layer (Mlp), EdgeLayer.qk (Mlp + Linear), dll
    motor_processor.*                    Layers.<i>.norm_layer (ActNorm2D_N), Layers.<i>.attn_1
                                         (GraphAttention: qk, w), and p / sign_s / l / log_s / u
Keys the released forward and inverse never read are ignored with the reason; everything else
is copied with its shape checked (heads.official.OfficialState).
"""

from __future__ import annotations

import torch
from torch import nn

from features_store.errors import UserError
from heads.official import OfficialState
from heads.regnn.config import RegnnConfig

PERCEPTUAL = "perceptual_processor.fuse_model."
COGNITIVE = "cognitive_processor."
MOTOR = "motor_processor."


def import_released_mhp(official: OfficialState, model: nn.Module, config: RegnnConfig) -> None:
    """Fill `official` (our keys) from the released MHP state dict it holds."""
    _perceptual(official, model)
    _cognitive(official)
    _motor(official, model, config)


def _perceptual(official: OfficialState, model: nn.Module) -> None:
    perceptual = model.perceptual
    for ours, theirs in (("video_projection", "proj_v"), ("audio_projection", "proj_a")):
        if isinstance(getattr(perceptual, ours), nn.Identity):
            official.ignore(f"{PERCEPTUAL}{theirs}.weight", "built but not applied: the features "
                            "already have the model width, so MULTModel.forward skips it")
        else:
            official.copy(f"perceptual.{ours}.weight", f"{PERCEPTUAL}{theirs}.weight")
    for ours, theirs in (("cross_modal", "trans_v_with_a"), ("self_attention", "trans_v_mem")):
        encoder = getattr(perceptual, ours)
        prefix = f"{PERCEPTUAL}{theirs}."
        official.ignore(f"{prefix}version", "fairseq's format marker, not a weight")
        official.ignore(f"{prefix}embed_positions._float_tensor",
                        "fairseq's dtype probe; the sinusoidal table is computed, not stored")
        for i in range(len(encoder.blocks)):
            block, layer = f"perceptual.{ours}.blocks.{i}.", f"{prefix}layers.{i}."
            for name in ("weight", "bias"):
                official.copy(f"{block}norm_attention.{name}", f"{layer}layer_norms.0.{name}")
                official.copy(f"{block}norm_ffn.{name}", f"{layer}layer_norms.1.{name}")
                official.copy(f"{block}ffn.0.{name}", f"{layer}fc1.{name}")
                official.copy(f"{block}ffn.3.{name}", f"{layer}fc2.{name}")
                official.copy(f"{block}attention.out_proj.{name}",
                              f"{layer}self_attn.out_proj.{name}")
            # fairseq packs q, k, v in one [3d, d] matrix in that order, as torch's MHA does
            official.copy(f"{block}attention.in_proj_weight", f"{layer}self_attn.in_proj_weight")
            official.copy(f"{block}attention.in_proj_bias", f"{layer}self_attn.in_proj_bias")
        official.copy_prefix(f"perceptual.{ours}.final_norm.", f"{prefix}layer_norm.")
    official.copy_prefix("perceptual.residual_mlp.0.", f"{PERCEPTUAL}proj1.")
    official.copy_prefix("perceptual.residual_mlp.3.", f"{PERCEPTUAL}proj2.")
    official.copy_prefix("perceptual.output.", f"{PERCEPTUAL}out_layer.")


def _cognitive(official: OfficialState) -> None:
    official.copy_prefix("cognitive.to_attributes.0.", f"{COGNITIVE}convert_layer.fc1.")
    official.copy_prefix("cognitive.to_attributes.2.", f"{COGNITIVE}convert_layer.fc2.")
    edge = f"{COGNITIVE}EdgeLayer.qk."
    official.copy_prefix("cognitive.edge_layer.query_key.0.", f"{edge}0.fc1.")
    official.copy_prefix("cognitive.edge_layer.query_key.2.", f"{edge}0.fc2.")
    official.copy("cognitive.edge_layer.query_key.3.weight", f"{edge}1.weight")
    official.ignore(f"{COGNITIVE}dll.", "the GMM distribution head: its parameters feed no loss "
                    "and no output of the released MSE training and inference")


def _motor(official: OfficialState, model: nn.Module, config: RegnnConfig) -> None:
    for name in ("p", "sign_s", "l", "log_s", "u"):
        official.ignore(f"{MOTOR}{name}", "the LU 1x1 mixing LipschitzGraph builds but never "
                        "applies (commented out of its forward and inverse)")
    for i, layer in enumerate(model.motor.layers):
        ours, theirs = f"motor.layers.{i}.", f"{MOTOR}Layers.{i}."
        if layer.actnorm is not None:
            official.copy(f"{ours}actnorm.log_scale", f"{theirs}norm_layer._log_scale")
            official.copy(f"{ours}actnorm.shift", f"{theirs}norm_layer._shift")
            # the released ActNorm keeps its "initialised" flag outside the state dict; trained
            # weights are initialised ones
            official.put(f"{ours}actnorm.initialized", torch.tensor(True),
                         f"{theirs}norm_layer (trained)")
        official.copy_prefix(f"{ours}residual.query_key.", f"{theirs}attn_1.qk.")
        weights = official.get(f"{theirs}attn_1.w").reshape(-1)  # [1, P] -> [P]
        if config.channel_weights == "softmax":
            # softmax(log w) = w / sum(w): exact while every released weight is positive
            if bool((weights <= 0).any()):
                raise UserError(f"{official.source}: {theirs}attn_1.w has a weight <= 0, which "
                                "softmax channel weights cannot express; import with "
                                "channel_weights=original (the paper profile)")
            weights = weights.log()
        official.put(f"{ours}residual.channel_logits", weights, f"{theirs}attn_1.w")
