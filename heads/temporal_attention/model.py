"""RAPT-CLIP's video side (adapter, temporal modules, fusion) and its CLIP prompt classifier."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from heads.temporal_attention.text import ClipTextTower, PromptLearner, tokenize


class FaceAdapter(nn.Module):
    """Linear D->D/r (no bias) - ReLU - Linear D/r->D (no bias) - ReLU; replaces the features."""

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(),
                                 nn.Linear(dim // reduction, dim, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TanhGELU(nn.Module):
    """The tanh approximation of GELU, as the paper's temporal transformer uses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        # no dropout on the attention weights (the paper's Attention has none)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class PreNormLayer(nn.Module):
    """x + Attn(LN(x)); x + FFN(LN(x)) with FFN = Linear - GELU - Dropout - Linear - Dropout."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, mlp_dim), TanhGELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class TemporalAttentionPool(nn.Module):
    """Learned positions [1, S, D], pre-LN transformer layers, attention pooling over time."""

    def __init__(self, segments: int, dim: int, layers: int, heads: int, head_dim: int,
                 mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(1, segments, dim))
        self.layers = nn.ModuleList(
            PreNormLayer(dim, heads, head_dim, mlp_dim, dropout) for _ in range(layers))
        self.score = nn.Sequential(nn.Linear(dim, mlp_dim // 2), nn.Tanh(),
                                   nn.Linear(mlp_dim // 2, 1))
        for module in self.score:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.position[:, : x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        weights = self.score(x).softmax(dim=1)  # [B, S, 1], over time
        return (weights * x).sum(dim=1)


class TemporalAttentionClip(nn.Module):
    """Face and body segment features -> one L2-normalised video feature -> prompt logits.

    `forward` returns (logits [B, C], video [B, D], class_text [C, D]) where class_text is the
    per-class mean of the normalised learned prompt features (Tc of the LDL, MI and DC losses).
    The frozen text tower is rebuilt from the image stream's provenance, so it is left out of
    `state_dict` (checkpoints hold only what training changes).
    """

    def __init__(self, tower: ClipTextTower, prompts: list[list[str]], descriptions: list[str],
                 *, dim: int, segments: int, adapter: bool, adapter_reduction: int,
                 layers: int, heads: int, head_dim: int, mlp_dim: int, dropout: float,
                 contexts: int, context_std: float, temperature: float) -> None:
        super().__init__()
        if tower.output_dim != dim:
            raise ValueError(f"text tower gives {tower.output_dim}-d features, images {dim}-d")
        self.num_classes = len(prompts)
        self.prompts_per_class = len(prompts[0])
        if any(len(p) != self.prompts_per_class for p in prompts):
            raise ValueError("every class needs the same number of prompt sentences")
        self.temperature = temperature
        self.face_adapter = FaceAdapter(dim, adapter_reduction) if adapter else nn.Identity()
        self.temporal_face = TemporalAttentionPool(segments, dim, layers, heads, head_dim,
                                                   mlp_dim, dropout)
        self.temporal_body = TemporalAttentionPool(segments, dim, layers, heads, head_dim,
                                                   mlp_dim, dropout)
        self.fusion = nn.Linear(2 * dim, dim)
        self.text_tower = tower
        self.prompt_learner = PromptLearner(tower, [s for p in prompts for s in p], contexts,
                                            context_std)
        with torch.no_grad():  # the MI targets: frozen tower, fixed sentences -> constants
            tokens = tokenize(descriptions)
            described = F.normalize(tower(tower.embed(tokens), tokens), dim=-1)
        self.register_buffer("description_features", described, persistent=False)

    def video_features(self, face: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        face = self.temporal_face(self.face_adapter(face))
        body = self.temporal_body(body)
        return F.normalize(self.fusion(torch.cat([face, body], dim=-1)), dim=-1)

    def prompt_features(self) -> torch.Tensor:
        """[C, P, D] normalised features of every learned prompt."""
        learner = self.prompt_learner
        features = self.text_tower(learner(), learner.tokens)
        features = F.normalize(features.float(), dim=-1)
        return features.view(self.num_classes, self.prompts_per_class, -1)

    def forward(self, face: torch.Tensor, body: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        video = self.video_features(face, body).float()
        text = self.prompt_features()
        logits = torch.einsum("bd,cpd->bcp", video, text).mean(dim=2) / self.temperature
        return logits, video, text.mean(dim=1)

    # --- the frozen tower stays out of checkpoints -------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for key in [k for k in state if k.startswith(f"{prefix}text_tower.")]:
            del state[key]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("text_tower.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"checkpoint does not fit the model: missing {missing}, "
                               f"unexpected {result.unexpected_keys}")
        return result


# --- losses ----------------------------------------------------------------------------------


def ldl_loss(logits: torch.Tensor, target: torch.Tensor, class_text: torch.Tensor,
             temperature: float, renormalise: bool = False) -> torch.Tensor:
    """KL(softmax(Tc Tc^T [y] / T) || softmax(logits / T)), batch mean: semantic soft labels.

    `class_text` is the mean of each class's normalised prompt features, which the released
    code uses as it is (its rows are shorter than 1, so the soft targets are flatter);
    `renormalise` makes each row unit length first (cosine similarities between classes)."""
    text = F.normalize(class_text, dim=-1) if renormalise else class_text
    soft = ((text @ text.t())[target] / temperature).softmax(dim=-1)
    log_probs = (logits / temperature).log_softmax(dim=-1)
    return F.kl_div(log_probs, soft, reduction="batchmean")


def mi_loss(class_text: torch.Tensor, descriptions: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between learned class features and the hand-written descriptions."""
    logits = F.normalize(class_text, dim=-1) @ F.normalize(descriptions, dim=-1).t()
    logits = logits / temperature
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def dc_loss(class_text: torch.Tensor) -> torch.Tensor:
    """sum((cos(Tc) - I)^2) / (C (C - 1)): keeps the class features apart."""
    text = F.normalize(class_text, dim=-1)
    c = len(text)
    eye = torch.eye(c, device=text.device, dtype=text.dtype)
    return ((text @ text.t()) - eye).pow(2).sum() / (c * (c - 1))


def aux_weight(epoch: int, warmup: int, ramp: int, final: float) -> float:
    """0 before `warmup` (0-based epoch), then linear to `final` over `ramp` epochs."""
    if epoch < warmup:
        return 0.0
    if ramp > 0 and epoch < warmup + ramp:
        return final * (epoch - warmup) / ramp
    return final
