"""The four sequence regressors of the ABAW 2022 transformer-LSTM family.

Every model maps a chunk `x` [B, L, D] (with `present` [B, L]: False on padding past a video's
end) and a carried `state` to per-frame valence/arousal [B, L, 2] and the next state. The head
detaches the state between chunks (truncated backprop through time, one optimiser step per
chunk) and resets a batch slot's state when a new video starts in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from heads.transformer_family.config import TransformerFamilyConfig

State = Any


class SinusoidalPositions(nn.Module):
    """Fixed sine/cosine positions (Vaswani et al.) added to the input, restarting per chunk.

    `zero_row`: row 0 is zeros, as the released get_sinusoid_encoding_table(padding_idx=0)
    makes it (a chunk's first frame gets no position); otherwise sin(0), cos(0) = 0, 1, ...
    The table is computed in float64 and rounded once, as the released numpy code does (float32
    angles would be off by up to 1e-5 at position 250).
    """

    def __init__(self, dim: int, max_len: int = 4096, zero_row: bool = False) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float64)[:, None]
        pair = torch.arange(dim, dtype=torch.float64) // 2
        angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * pair / dim)
        table = torch.empty(max_len, dim, dtype=torch.float64)
        table[:, 0::2] = torch.sin(angle[:, 0::2])
        table[:, 1::2] = torch.cos(angle[:, 1::2])
        if zero_row:
            table[0] = 0.0
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.table.shape[0]:
            raise ValueError(f"chunk of {x.shape[1]} frames exceeds {self.table.shape[0]}")
        return x + self.table[: x.shape[1]].to(x.dtype)


def positions(config: TransformerFamilyConfig) -> SinusoidalPositions:
    return SinusoidalPositions(config.d_model, max(config.chunk, 1) + 1,
                               zero_row=config.position_zero_row)


def init_released(model: nn.Module, std: float = 0.02) -> nn.Module:
    """The released tools.init_weights(init_type="normal", init_gain=0.02), which setup() applies
    to every sub-network: each Linear, the encoder's FFN and the attention out-projections
    included, gets weights N(0, std) and zero bias; everything else (LayerNorm, LSTM, the
    attention in-projection) keeps PyTorch's initialisation."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def sub_network_parameters(model: nn.Module) -> list[list[nn.Parameter]]:
    """The model's parameters grouped as the released code's sub-networks (its model_names:
    each is clipped to the gradient norm on its own); every parameter in exactly one group."""
    groups: list[list[nn.Parameter]] = []
    for names in getattr(model, "SUBNETWORKS", ()):
        params: list[nn.Parameter] = []
        for name in names:
            part = getattr(model, name, None)
            if isinstance(part, nn.Parameter):
                params.append(part)
            elif isinstance(part, nn.Module):
                params.extend(part.parameters())
        if params:
            groups.append(params)
    grouped = {id(p) for group in groups for p in group}
    rest = [p for p in model.parameters() if id(p) not in grouped]
    if rest:  # a module without a released counterpart: clipped as a group of its own
        groups.append(rest)
    return groups


def regressor(in_dim: int, hidden: Sequence[int], dropout: float, out_dim: int = 2) -> nn.Module:
    """[Linear - ReLU - Dropout] per hidden size, then Linear -> out_dim."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def encoder(config: TransformerFamilyConfig) -> nn.TransformerEncoder:
    """Post-LN transformer encoder (d_model, n_heads, ffn, n_layers of the config)."""
    layer = nn.TransformerEncoderLayer(
        config.d_model, config.n_heads, config.ffn, config.dropout, batch_first=True,
        norm_first=False,
    )
    return nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)


def _padding_mask(present: torch.Tensor, enabled: bool = True) -> torch.Tensor | None:
    """Key padding mask for attention; an all-padding row (an empty batch slot) is left
    unmasked so softmax has something to normalise over (its outputs are never scored).
    None when not `enabled` (the released encoder attends to padding)."""
    if not enabled:
        return None
    padding = ~present
    empty = padding.all(dim=1, keepdim=True)
    return padding & ~empty


def run_lstm(lstm: nn.LSTM, x: torch.Tensor,
             state: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, Any]:
    """The LSTM in float32 even under autocast: cuDNN's reduced-precision RNN support varies by
    dtype and version, and a carried state that drifts in bf16 over hundreds of chunks would
    compound the rounding. Its cost is small next to the encoder's."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        if state is not None:
            state = (state[0].float(), state[1].float())
        return lstm(x.float(), state)


def _reset_lstm(state: tuple[torch.Tensor, torch.Tensor] | None,
                reset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    if state is None:
        return None
    keep = (~reset).to(state[0].dtype)[None, :, None]
    return state[0] * keep, state[1] * keep


class TransformerRegressor(nn.Module):
    """`transformer`: Linear D->d + positions, post-LN encoder, regressor. Stateless."""

    # the released sub-networks (net_seq, net_reg), as our attributes
    SUBNETWORKS = (("project", "encoder"), ("head",))

    def __init__(self, in_dim: int, config: TransformerFamilyConfig) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, config.d_model)
        self.positions = positions(config)
        self.encoder = encoder(config)
        self.mask_padding = config.key_padding_mask
        self.head = regressor(config.d_model, config.regressor_hidden, config.regressor_dropout)

    def initial_state(self, batch: int, device: torch.device) -> State:
        return None

    def reset_state(self, state: State, reset: torch.Tensor) -> State:
        return state

    def detach_state(self, state: State) -> State:
        return state

    def forward(self, x: torch.Tensor, present: torch.Tensor,
                state: State = None) -> tuple[torch.Tensor, State]:
        h = self.encoder(self.positions(self.project(x)),
                         src_key_padding_mask=_padding_mask(present, self.mask_padding))
        return self.head(h), state


def fc_encoder(in_dim: int, config: TransformerFamilyConfig) -> nn.Sequential:
    """The official FcEncoder of one layer: Linear - ReLU - Dropout(input_dropout); without the
    ReLU when `input_relu` is off (our earlier variant)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, config.d_model)]
    if config.input_relu:
        layers.append(nn.ReLU())
    layers.append(nn.Dropout(config.input_dropout))
    return nn.Sequential(*layers)


class TransformerLSTMRegressor(nn.Module):
    """`transformer-lstm`: FcEncoder D->d (Linear-ReLU-Dropout), encoder, optional residual
    (FcEncoder output + encoder output), carried LSTM, regressor."""

    # the released sub-networks (net_fc, net_te, net_lstm, net_reg)
    SUBNETWORKS = (("project",), ("encoder",), ("lstm",), ("head",))

    def __init__(self, in_dim: int, config: TransformerFamilyConfig) -> None:
        super().__init__()
        self.project = fc_encoder(in_dim, config)
        self.positions = positions(config)
        self.encoder = encoder(config)
        self.mask_padding = config.key_padding_mask
        self.residual = config.residual
        self.lstm = nn.LSTM(config.d_model, config.lstm_hidden, batch_first=True)
        self.head = regressor(config.lstm_hidden, config.regressor_hidden, config.regressor_dropout)

    def initial_state(self, batch: int, device: torch.device) -> State:
        return None  # nn.LSTM starts from zeros

    def reset_state(self, state: State, reset: torch.Tensor) -> State:
        return _reset_lstm(state, reset)

    def detach_state(self, state: State) -> State:
        return None if state is None else (state[0].detach(), state[1].detach())

    def forward(self, x: torch.Tensor, present: torch.Tensor,
                state: State = None) -> tuple[torch.Tensor, State]:
        projected = self.project(x)
        h = self.encoder(self.positions(projected),
                         src_key_padding_mask=_padding_mask(present, self.mask_padding))
        if self.residual:
            h = h + projected
        out, state = run_lstm(self.lstm, h, state)
        return self.head(out), state


class TransformerAttentionRegressor(nn.Module):
    """`transformer-attention`: encoder per chunk plus attention over a memory of earlier chunks.

    Memory: encoder outputs of the video's earlier chunks, mean-pooled every `memory_pool` frames,
    the last `memory_slots` slots kept (fixed-size, with a validity mask; padding frames are left
    out of the pooling). `memory_attention`:
      official          out = h + MultiheadAttention(h, memory, memory) (dropout
                        `attention_dropout`, 0 by default), no normalisation; a chunk with no
                        memory yet (the first of its video) skips attention: out = h.
      normed-null-slot  out = LayerNorm(h + attention) with a learned null slot always among
                        the keys, so the first chunk attends to it.
    """

    # the released sub-networks (net_seq, net_reg, net_attn)
    SUBNETWORKS = (("project", "encoder"), ("head",), ("attention", "norm", "null_slot"))

    def __init__(self, in_dim: int, config: TransformerFamilyConfig) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, config.d_model)
        self.positions = positions(config)
        self.encoder = encoder(config)
        self.mask_padding = config.key_padding_mask
        self.attention = nn.MultiheadAttention(config.d_model, config.memory_heads,
                                               dropout=config.attention_dropout,
                                               batch_first=True)
        self.official = config.memory_attention == "official"
        if not self.official:
            self.norm = nn.LayerNorm(config.d_model)
            self.null_slot = nn.Parameter(torch.zeros(1, 1, config.d_model))
        self.d_model = config.d_model
        self.pool = config.memory_pool
        self.slots = config.memory_slots
        self.head = regressor(config.d_model, config.regressor_hidden, config.regressor_dropout)

    def initial_state(self, batch: int, device: torch.device) -> State:
        d = self.d_model
        return (torch.zeros(batch, self.slots, d, device=device),
                torch.zeros(batch, self.slots, dtype=torch.bool, device=device))

    def reset_state(self, state: State, reset: torch.Tensor) -> State:
        memory, valid = state
        keep = ~reset
        return memory * keep[:, None, None].to(memory.dtype), valid & keep[:, None]

    def detach_state(self, state: State) -> State:
        return state[0].detach(), state[1]

    def _pooled(self, h: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, d = h.shape
        n = math.ceil(length / self.pool)
        pad = n * self.pool - length
        weight = present.to(h.dtype)
        if pad:
            h = nn.functional.pad(h, (0, 0, 0, pad))
            weight = nn.functional.pad(weight, (0, pad))
        h = h.reshape(b, n, self.pool, d)
        weight = weight.reshape(b, n, self.pool, 1)
        count = weight.sum(2)
        pooled = (h * weight).sum(2) / count.clamp_min(1.0)
        return pooled, count[..., 0] > 0

    def forward(self, x: torch.Tensor, present: torch.Tensor,
                state: State = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        memory, valid = state
        h = self.encoder(self.positions(self.project(x)),
                         src_key_padding_mask=_padding_mask(present, self.mask_padding))
        if self.official:
            has_memory = valid.any(dim=1)
            # a slot without memory gets every key unmasked (so softmax stays finite) and its
            # attention output is then dropped
            key_valid = valid | ~has_memory[:, None]
            attended, _ = self.attention(h, memory.to(h.dtype), memory.to(h.dtype),
                                         key_padding_mask=~key_valid, need_weights=False)
            out = torch.where(has_memory[:, None, None], h + attended, h)
        else:
            null = self.null_slot.expand(x.shape[0], 1, -1).to(h.dtype)
            keys = torch.cat([null, memory.to(h.dtype)], dim=1)
            key_valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
            attended, _ = self.attention(h, keys, keys, key_padding_mask=~key_valid,
                                         need_weights=False)
            out = self.norm(h + attended)
        pooled, pooled_valid = self._pooled(h, present)
        memory = torch.cat([memory.to(pooled.dtype), pooled], dim=1)[:, -self.slots :]
        valid = torch.cat([valid, pooled_valid], dim=1)[:, -self.slots :]
        return self.head(out), (memory, valid)


class FCLSTMRegressor(nn.Module):
    """`fclstm-xl`: FC D->d (ReLU, dropout), LSTM carried across chunks, regressor."""

    # the released sub-networks (net_fc, net_seq, net_reg)
    SUBNETWORKS = (("project",), ("lstm",), ("head",))

    def __init__(self, in_dim: int, config: TransformerFamilyConfig) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(in_dim, config.d_model), nn.ReLU(),
                                     nn.Dropout(config.input_dropout))
        self.lstm = nn.LSTM(config.d_model, config.lstm_hidden, batch_first=True)
        self.head = regressor(config.lstm_hidden, config.regressor_hidden, config.regressor_dropout)

    def initial_state(self, batch: int, device: torch.device) -> State:
        return None

    def reset_state(self, state: State, reset: torch.Tensor) -> State:
        return _reset_lstm(state, reset)

    def detach_state(self, state: State) -> State:
        return None if state is None else (state[0].detach(), state[1].detach())

    def forward(self, x: torch.Tensor, present: torch.Tensor,
                state: State = None) -> tuple[torch.Tensor, State]:
        out, state = run_lstm(self.lstm, self.project(x), state)
        return self.head(out), state


MODELS: dict[str, type[nn.Module]] = {
    "transformer": TransformerRegressor,
    "transformer-lstm": TransformerLSTMRegressor,
    "transformer-attention": TransformerAttentionRegressor,
    "fclstm-xl": FCLSTMRegressor,
}
