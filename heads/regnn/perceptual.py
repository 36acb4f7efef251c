"""Perceptual processor: fuse the speaker's video and audio frames into one 64-d code per frame.

Follows the MulT design (Tsai et al., 2019) that REGNN uses: kernel-1 Conv1d projections of both
modalities to a common width, a cross-modal transformer in which the video frames (queries)
attend to the audio frames (keys/values), a self-attention transformer over the result, a
residual MLP and a final linear map to `perceptual_out_dim`.

Matches the REACT baseline's `regnn/models/MULTModel.py` and its fairseq-derived transformer:
- pre-LayerNorm blocks; one LayerNorm normalises the query and (in the cross-modal encoder) the
  keys and values alike, as the baseline's `layer_norms[0]` does;
- inputs (and keys/values) scaled by sqrt(d), plus fairseq sinusoidal positions numbered from 1
  (position 0 is fairseq's padding index), then embedding dropout drawn separately for keys
  and values;
- attention dropout 0.0 in both encoders (attn_dropout_a / attn_dropout_v of MULTModel), ReLU
  dropout 0.1, residual dropout 0.1, embedding dropout 0.25, output dropout 0.0;
- xavier-uniform weights and zero biases in the FFN and attention projections;
- audio is not projected when it already has the model width (128 = 128 in the baseline);
- fairseq's padding rule (`fairseq_padding`, on in the paper profile): a frame whose first
  channel (of the encoder's input: the projected video, the audio, the fused code) is exactly 0
  is taken for padding and gets position 0, whose code is zero, while the other frames keep
  their numbers. `profile=fixed` numbers every frame and masks padding explicitly instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from heads.regnn.config import RegnnConfig

FIRST_POSITION = 1  # fairseq numbers positions from padding_idx + 1


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """[length, dim] fairseq sin/cos position codes of positions 1..length (first half sines,
    second half cosines, frequencies 10000^(-i / (half - 1)))."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=device)
        / max(half - 1, 1)
    )
    positions = torch.arange(FIRST_POSITION, FIRST_POSITION + length, dtype=torch.float32,
                             device=device)
    angles = positions[:, None] * frequencies
    codes = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        codes = torch.cat([codes, torch.zeros(length, 1, device=device)], dim=1)
    return codes


def _xavier(linear: nn.Linear) -> nn.Linear:
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


class TransformerBlock(nn.Module):
    """Pre-LN block; with `context` it is cross-attention (queries from x, keys and values from
    the two embeddings of the context)."""

    def __init__(self, config: RegnnConfig) -> None:
        super().__init__()
        dim = config.model_dim
        self.norm_attention = nn.LayerNorm(dim)  # query, keys and values alike
        self.attention = nn.MultiheadAttention(
            dim, config.num_heads, dropout=config.attn_dropout, batch_first=True
        )
        _xavier(self.attention.out_proj)  # in_proj is xavier-uniform with zero bias already
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            _xavier(nn.Linear(dim, 4 * dim)),
            nn.ReLU(),
            nn.Dropout(config.relu_dropout),
            _xavier(nn.Linear(4 * dim, dim)),
        )
        self.res_dropout = nn.Dropout(config.res_dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        query = self.norm_attention(x)
        if context is None:
            keys = values = query
        else:
            keys, values = self.norm_attention(context[0]), self.norm_attention(context[1])
        attended, _ = self.attention(
            query, keys, values, key_padding_mask=key_padding_mask, need_weights=False
        )
        x = x + self.res_dropout(attended)
        return x + self.res_dropout(self.ffn(self.norm_ffn(x)))


class TransformerEncoder(nn.Module):
    """A stack of blocks with MulT's input embedding (scale, positions, dropout) and final norm."""

    def __init__(self, config: RegnnConfig, n_layers: int) -> None:
        super().__init__()
        self.fairseq_padding = config.fairseq_padding
        self.scale = math.sqrt(config.model_dim)
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(config.model_dim)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        positions = sinusoidal_positions(x.shape[1], x.shape[2], x.device)
        if self.fairseq_padding:
            # fairseq's make_positions: first channel == padding_idx (0) -> position 0 (zeros)
            positions = positions * (x[..., :1] != 0).to(positions.dtype)
        return self.embed_dropout(self.scale * x + positions)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self._embed(x)
        pair = None
        if context is not None:
            # keys and values are embedded separately: their dropout masks differ
            pair = (self._embed(context), self._embed(context))
        for block in self.blocks:
            x = block(x, pair, key_padding_mask)
        return self.final_norm(x)


class PerceptualProcessor(nn.Module):
    """video [B, T, video_dim], audio [B, T, audio_dim] -> [B, T, perceptual_out_dim]."""

    def __init__(self, config: RegnnConfig) -> None:
        super().__init__()
        dim = config.model_dim
        # the baseline projects each modality only when its width differs from the model's
        self.video_projection = (
            nn.Identity() if config.video_dim == dim
            else nn.Conv1d(config.video_dim, dim, kernel_size=1, bias=False))
        self.audio_projection = (
            nn.Identity() if config.audio_dim == dim
            else nn.Conv1d(config.audio_dim, dim, kernel_size=1, bias=False))
        self.cross_modal = TransformerEncoder(config, config.cross_layers)
        self.self_attention = TransformerEncoder(config, config.self_layers)
        self.residual_mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(config.out_dropout), nn.Linear(dim, dim)
        )
        self.output = nn.Linear(dim, config.perceptual_out_dim)

    def forward(
        self, video: torch.Tensor, audio: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`frame_mask` [B, T] is True on real frames; padded frames are never attended to."""
        if video.shape[:2] != audio.shape[:2]:
            raise ValueError(
                f"video {tuple(video.shape)} and audio {tuple(audio.shape)} differ in [B, T]"
            )
        key_padding_mask = None
        if frame_mask is not None:
            key_padding_mask = ~frame_mask.bool()
            # a window with no real frame would give NaN attention; let it attend to everything
            key_padding_mask = key_padding_mask & ~key_padding_mask.all(dim=1, keepdim=True)
        video = self.video_projection(video.transpose(1, 2)).transpose(1, 2)
        audio = self.audio_projection(audio.transpose(1, 2)).transpose(1, 2)
        fused = self.cross_modal(video, audio, key_padding_mask)
        fused = self.self_attention(fused, key_padding_mask=key_padding_mask)
        fused = fused + self.residual_mlp(fused)
        return self.output(fused)
