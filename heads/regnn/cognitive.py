"""Cognitive processor: per-frame codes -> a 25-node graph (node features + multi-channel edges).

Each frame's 64-d perceptual code is mapped to the 25 reaction attributes (MLP 64 -> 32 -> 25);
transposing gives 25 nodes whose features are the attribute's trajectory over the window's 50
frames. The edge layer builds `edge_channels` attention graphs over the nodes, keeps for every
node its `top_k` strongest neighbours (plus itself) and normalises each channel to be doubly
stochastic: rows are normalised, then E = R (R / colsum R)^T (the edge normalisation of Gong &
Cheng, "Exploiting edge features in graph neural networks", 2019).

In the released code the neighbour mask of *every* node is the union of the top-k lists of all
nodes (a loop-variable slip), so with 25 nodes the graph is nearly complete; the paper profile
keeps that (`edge_topk=union`). `profile=fixed` (`edge_topk=per-node`) lets each node keep its
own top-k, as the paper describes.
"""

from __future__ import annotations

import torch
from torch import nn

from heads.regnn.config import RegnnConfig


class EdgeLayer(nn.Module):
    """Node features [B, N, F] -> edges [B, P, N, N] (P channels, each doubly stochastic)."""

    def __init__(self, node_features: int, channels: int, top_k: int,
                 topk_mode: str = "union") -> None:
        super().__init__()
        self.channels = channels
        self.top_k = top_k
        self.topk_mode = topk_mode
        self.scale = node_features**-0.5
        self.query_key = nn.Sequential(
            nn.Linear(node_features, node_features),
            nn.GELU(),
            nn.Linear(node_features, node_features),
            nn.Linear(node_features, 2 * channels * node_features, bias=False),
        )

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        batch, n_nodes, n_features = nodes.shape
        qk = self.query_key(nodes).reshape(batch, n_nodes, 2, self.channels, n_features)
        query, key = qk.permute(2, 0, 3, 1, 4)  # each [B, P, N, F]
        attention = torch.softmax(query @ key.transpose(-1, -2) * self.scale, dim=-1)
        return doubly_stochastic(attention * self.neighbour_mask(attention))

    def neighbour_mask(self, attention: torch.Tensor) -> torch.Tensor:
        """[B, 1, N, N] 0/1 mask: each node's top-k neighbours by attention summed over channels.

        The selection is a discrete choice, so it takes no gradient.
        """
        strength = attention.detach().sum(dim=1)  # [B, N, N]
        k = min(self.top_k, strength.shape[-1])
        chosen = strength.topk(k, dim=-1).indices
        mask = torch.zeros_like(strength).scatter_(-1, chosen, 1.0)
        if self.topk_mode == "union":
            # the paper's code: every row gets every node's chosen columns
            mask = mask.amax(dim=1, keepdim=True).expand_as(mask)
        eye = torch.eye(strength.shape[-1], dtype=mask.dtype, device=mask.device)
        return torch.maximum(mask, eye).unsqueeze(1)


def doubly_stochastic(edge: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Non-negative [..., N, N] -> rows and columns summing to 1 (symmetric)."""
    rows = edge / (edge.sum(dim=-1, keepdim=True) + eps)
    columns = rows / (rows.sum(dim=-2, keepdim=True) + eps)
    return rows @ columns.transpose(-1, -2)


class CognitiveProcessor(nn.Module):
    """[B, T, perceptual_out_dim] -> nodes [B, out_dim, T], edges [B, edge_channels, N, N]."""

    def __init__(self, config: RegnnConfig) -> None:
        super().__init__()
        self.to_attributes = nn.Sequential(
            nn.Linear(config.perceptual_out_dim, config.cognitive_hidden),
            nn.GELU(),
            nn.Linear(config.cognitive_hidden, config.out_dim),
        )
        self.edge_layer = EdgeLayer(config.window, config.edge_channels, config.top_k,
                                    config.edge_topk)

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nodes = self.to_attributes(codes).transpose(1, 2)  # [B, N, T]
        return nodes, self.edge_layer(nodes)
