"""The Tiny Recursive Model of Affective-TRM, run frame by frame over a clip.

One shared block stack (`layers` post-norm blocks: self-attention + SwiGLU, each followed by a
weightless RMSNorm) refines two states, z_H (the answer) and z_L (the latent). One frame step:

    repeat h_cycles:
        repeat l_cycles:  z_L <- net(z_L + (z_H + x_t))
        z_H <- net(z_H + z_L)
    y_t = head(z_H) + shortcut(x_t)

with x_t the projected, layer-normalised input frame (sums in the released code's order, so an
imported released checkpoint gives its outputs to float rounding). The states are one token
each, as in the public code, so attention over them is exact but trivially short (its rotary
position at index 0 is the identity, so no rotary embedding is applied). `head` starts at zero
so the model starts as the linear shortcut.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from heads.trm.config import TRMConfig


def _lecun_linear(in_features: int, out_features: int) -> nn.Linear:
    """Bias-free linear layer with truncated LeCun-normal weights (std 1/sqrt(fan_in), cut
    at 2 std), the initialisation of the TRM blocks."""
    layer = nn.Linear(in_features, out_features, bias=False)
    std = 1.0 / math.sqrt(in_features)
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    return layer


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS normalisation without a learned scale, computed in float32."""
    dtype = x.dtype
    x = x.float()
    return (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)).to(dtype)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden={hidden} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = _lecun_linear(hidden, 3 * hidden)
        self.out = _lecun_linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, hidden = x.shape
        if tokens == 1:
            # softmax over a single key is 1: attention returns the value (same maths, and the
            # TRM's one-token states make this the hot path, called 8 times per frame)
            return self.out(F.linear(x, self.qkv.weight[2 * hidden :]))
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, -1).unbind(2)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                  v.transpose(1, 2))
        return self.out(attended.transpose(1, 2).reshape(batch, tokens, hidden))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, expansion: float) -> None:
        super().__init__()
        inner = -(-round(expansion * hidden * 2 / 3) // 256) * 256  # rounded up to 256
        self.gate_up = _lecun_linear(hidden, 2 * inner)
        self.down = _lecun_linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, expansion: float, eps: float) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden, heads)
        self.mlp = SwiGLU(hidden, expansion)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rms_norm(x + self.attention(x), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class TinyRecursiveModel(nn.Module):
    """Inputs [B, T, D] -> per-frame valence/arousal [B, T, 2].

    `carry_state=True` carries (z_H, z_L) from frame t-1 to frame t; False starts every frame
    from the learned initial states (the public code's behaviour with halt_max_steps=1).
    `last_frame` is the released code's supervised step on its own.
    """

    def __init__(self, input_dim: int, config: TRMConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.hidden
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_norm.requires_grad_(config.input_norm_trainable)
        self.input_proj = nn.Linear(input_dim, hidden, bias=False)
        self.blocks = nn.ModuleList(
            Block(hidden, config.heads, config.expansion, config.rms_eps)
            for _ in range(config.layers))
        self.z_h_init = nn.Parameter(torch.empty(hidden))
        self.z_l_init = nn.Parameter(torch.empty(hidden))
        for init in (self.z_h_init, self.z_l_init):
            nn.init.trunc_normal_(init, std=0.02, a=-0.04, b=0.04)
        self.output_head = nn.Linear(hidden, 2, bias=False)
        nn.init.zeros_(self.output_head.weight)
        self.shortcut = nn.Linear(input_dim, 2)
        nn.init.xavier_uniform_(self.shortcut.weight)
        nn.init.zeros_(self.shortcut.bias)

    def net(self, hidden: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            hidden = block(hidden)
        return hidden

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        z_h = self.z_h_init.view(1, 1, -1).expand(batch, 1, -1)
        z_l = self.z_l_init.view(1, 1, -1).expand(batch, 1, -1)
        return z_h, z_l

    def step(self, x: torch.Tensor, z_h: torch.Tensor, z_l: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame: x [B, 1, hidden] (projected input), states [B, 1, hidden]."""
        for _ in range(self.config.h_cycles):
            for _ in range(self.config.l_cycles):
                z_l = self.net(z_l + (z_h + x))
            z_h = self.net(z_h + z_l)
        return z_h, z_l

    def last_frame(self, x: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, D] (one frame per sample) -> [B, 2], from the initial state.

        `steps` [B] (default 1 each): how many recursion steps each sample runs on its frame
        with the state carried between them, as a released training step that was not halted
        goes on from its carried state on the same input."""
        x = self.input_norm(x)
        projected = self.input_proj(x)[:, None]
        z_h, z_l = self.initial_state(len(x))
        for step in range(1 if steps is None else int(steps.max())):
            new_h, new_l = self.step(projected, z_h, z_l)
            if steps is None:
                z_h, z_l = new_h, new_l
            else:
                going_on = (steps > step).view(-1, 1, 1)
                z_h, z_l = torch.where(going_on, new_h, z_h), torch.where(going_on, new_l, z_l)
        return self.output_head(z_h[:, 0]) + self.shortcut(x)

    def forward(self, x: torch.Tensor, carry_state: bool = True) -> torch.Tensor:
        x = self.input_norm(x)
        projected = self.input_proj(x)  # all frames at once; only the recursion is sequential
        shortcut = self.shortcut(x)
        batch, frames, _ = x.shape
        if not carry_state:
            # Frames are independent: run them all as one batch of single-frame steps.
            z_h, z_l = self.initial_state(batch * frames)
            z_h, _ = self.step(projected.reshape(batch * frames, 1, -1), z_h, z_l)
            return self.output_head(z_h).view(batch, frames, 2) + shortcut
        z_h, z_l = self.initial_state(batch)
        answers = []
        for t in range(frames):
            z_h, z_l = self.step(projected[:, t : t + 1], z_h, z_l)
            answers.append(z_h)
        return self.output_head(torch.cat(answers, dim=1)) + shortcut
