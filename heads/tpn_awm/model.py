"""AWTPN over variable-length sequences: shared space, temporal prototypes, adaptive weights.

Every sequence operation takes a mask ([B, T], True = a real frame): padding only exists to
stack a batch, and an utterance gives the same output alone as in any batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over `dim` where masked-out entries get exactly 0 weight."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=dim)
    return weights.nan_to_num(0.0)  # an all-masked row (a padded query) gives zeros


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of [B, T, ...] using only real frames -> [B, ...]."""
    m = mask.to(x.dtype)
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class SharedSpace(nn.Module):
    """SES: per modality Linear D->S - ReLU - Dropout."""

    def __init__(self, audio_dim: int, video_dim: int, shared_dim: int, dropout: float) -> None:
        super().__init__()
        self.audio = nn.Sequential(nn.Linear(audio_dim, shared_dim), nn.ReLU(), nn.Dropout(dropout))
        self.video = nn.Sequential(nn.Linear(video_dim, shared_dim), nn.ReLU(), nn.Dropout(dropout))


class AdaptiveWeights(nn.Module):
    """AWM for one modality: reliability softmax_t(-min_c d) spread by self-attention.

    A = softmax(q k^T / sqrt(S)) with bias-free q, k; w = A r renormalised over real frames;
    pooled = sum_t w_t x_t.
    """

    def __init__(self, shared_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(shared_dim, shared_dim, bias=False)
        self.key = nn.Linear(shared_dim, shared_dim, bias=False)

    def forward(self, x: torch.Tensor, distances: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        reliability = masked_softmax(-distances.min(dim=-1).values, mask)  # [B, T]
        scores = self.query(x) @ self.key(x).transpose(1, 2) / x.shape[-1] ** 0.5
        attention = masked_softmax(scores, mask[:, None, :])  # keys: real frames only
        weights = (attention @ reliability.unsqueeze(-1)).squeeze(-1) * mask
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-8)
        return (x * weights.unsqueeze(-1)).sum(dim=1), weights


class Awtpn(nn.Module):
    def __init__(self, audio_dim: int, video_dim: int, num_classes: int, *, shared_dim: int,
                 dropout: float, distance_scale_audio: float, distance_scale_video: float,
                 alpha_audio: float, beta_video: float) -> None:
        super().__init__()
        self.ses = SharedSpace(audio_dim, video_dim, shared_dim, dropout)
        self.prototypes = nn.Parameter(torch.randn(num_classes, shared_dim) * 0.02)
        self.awm_audio = AdaptiveWeights(shared_dim)
        self.awm_video = AdaptiveWeights(shared_dim)
        self.classifier = nn.Linear(shared_dim, num_classes)
        self.scales = (distance_scale_audio, distance_scale_video)
        self.fusion = (alpha_audio, beta_video)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """TPN: squared Euclidean distance of every frame to every prototype [B, T, C]."""
        p = self.prototypes.to(x.dtype)
        d = (x * x).sum(-1, keepdim=True) + (p * p).sum(-1) - 2.0 * x @ p.t()
        return d.clamp_min(0.0)

    def forward(self, audio: torch.Tensor, audio_mask: torch.Tensor, video: torch.Tensor,
                video_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.ses.audio(audio)
        v = self.ses.video(video)
        d_a = self.distances(a) * self.scales[0]
        d_v = self.distances(v) * self.scales[1]
        pooled_a, w_a = self.awm_audio(a, d_a, audio_mask)
        pooled_v, w_v = self.awm_video(v, d_v, video_mask)
        fused = self.fusion[0] * pooled_a + self.fusion[1] * pooled_v
        return {"logits": self.classifier(fused), "a": a, "v": v, "d_a": d_a, "d_v": d_v,
                "w_a": w_a, "w_v": w_v}


def awtpn_losses(out: dict[str, torch.Tensor], target: torch.Tensor, audio_mask: torch.Tensor,
                 video_mask: torch.Tensor, inter_negative: torch.Tensor,
                 contrast_negative: torch.Tensor, *, inter_margin: float,
                 contrast_margin: float, inter_sign: str) -> dict[str, torch.Tensor]:
    """The six AWTPN losses (unweighted), each honouring the masks."""
    num_classes = out["logits"].shape[-1]
    onehot = F.one_hot(target, num_classes).to(out["d_a"].dtype)
    # align: each frame's distance to its class prototype, mean over real frames per utterance
    align = masked_mean((out["d_a"] * onehot[:, None]).sum(-1), audio_mask).mean() + \
        masked_mean((out["d_v"] * onehot[:, None]).sum(-1), video_mask).mean()
    a_mean = masked_mean(out["a"], audio_mask)
    v_mean = masked_mean(out["v"], video_mask)
    cos_pos = F.cosine_similarity(a_mean, v_mean, dim=-1)
    intra = (1.0 - cos_pos).mean()
    cos_neg = F.cosine_similarity(a_mean, v_mean[inter_negative], dim=-1)
    if inter_sign == "original":
        inter = F.relu(inter_margin + cos_pos - cos_neg).mean()
    else:
        inter = F.relu(inter_margin + cos_neg - cos_pos).mean()
    distance = (a_mean - v_mean).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    distance_neg = (a_mean - v_mean[contrast_negative]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    contrast = distance.mean() + F.relu(contrast_margin - distance_neg).mean()
    logits = out["logits"].float()
    ce = F.cross_entropy(logits, target)
    mse = (logits.softmax(dim=-1) - onehot.float()).pow(2).mean()
    return {"align": align, "intra": intra, "inter": inter, "contrast": contrast, "ce": ce,
            "mse": mse}
