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
    """Fixed sine/cosine positions (Vaswani et al.) added to the input, restarting per chunk."""

    def __init__(self, dim: int, max_len: int = 4096) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq[: dim // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.table.shape[0]:
            raise ValueError(f"chunk of {x.shape[1]} frames exceeds {self.table.shape[0]}")
        return x + self.table[: x.shape[1]].to(x.dtype)


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


def _padding_mask(present: torch.Tensor) -> torch.Tensor:
    """Key padding mask for attention; an all-padding row (an empty batch slot) is left
    unmasked so softmax has something to normalise over (its outputs are never scored)."""
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

    def __init__(self, in_dim: int, config: TransformerFamilyConfig) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, config.d_model)
        self.positions = SinusoidalPositions(config.d_model, max(config.chunk, 1) + 1)
        self.encoder = encoder(config)
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
                         src_key_padding_mask=_padding_mask(present))
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

    def __init__(self, in_dim: int, config: TransformerFamilyConfig) -> None:
        super().__init__()
        self.project = fc_encoder(in_dim, config)
        self.positions = SinusoidalPositions(config.d_model, max(config.chunk, 1) + 1)
        self.encoder = encoder(config)
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
        h = self.encoder(self.positions(projected), src_key_padding_mask=_padding_mask(present))
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

    def __init__(self, in_dim: int, config: TransformerFamilyConfig) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, config.d_model)
        self.positions = SinusoidalPositions(config.d_model, max(config.chunk, 1) + 1)
        self.encoder = encoder(config)
        self.attention = nn.MultiheadAttention(config.d_model, config.n_heads,
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
                         src_key_padding_mask=_padding_mask(present))
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
