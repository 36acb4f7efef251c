"""The frozen CLIP text tower, built from the same weights as the cached image stream.

The image stream's provenance (StreamInfo) says which CLIP produced the features: its weights
source (a hub id, a file, or `random`), their sha256, and the architecture (`reduced`,
`quick_gelu`). We build that same open_clip model and keep only its text tower:

- published weights: the checkpoint is found in the local hub cache (or at the recorded path,
  or at `text_weights`), its sha256 checked against the stream's, and loaded by open_clip;
- `random` weights: the model is built with the same seed and configuration the extractor
  used, so the text tower is the random tower that was paired with the random image tower.

Nothing is downloaded. CLIP's text transformer is causal, so a prompt's end-of-text feature
depends only on the tokens up to it: prompts are run truncated to the longest prompt's length,
which gives the same features at a fraction of the 77-token cost.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# The extractor's reduced CLIP (tests and smoke runs): 1-layer text tower of width 32. It must
# match extract/encoders/clip.py REDUCED_CFG so a random reduced build reproduces its tower.
REDUCED_CFG: dict[str, Any] = {
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _user_error(message: str) -> Exception:
    from features_store.errors import UserError

    return UserError(message)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _hub_file(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in CHECKPOINT_FILES:
        try:
            hit = try_to_load_from_cache(repo_id, name)
        except Exception:  # not a valid repo id (a path that no longer exists)
            return None
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def describe_source(info: Any) -> dict[str, Any]:
    """What the image stream's provenance says about its CLIP: arch, weights, seed."""
    encoder = (info.preprocessing or {}).get("encoder", {})
    arch = encoder.get("arch", {})
    identity = str(encoder.get("weights") or "")
    random_build = bool((info.extra or {}).get("random_weights")) or info.weights == "random"
    seed = int(identity.partition(":")[2] or 0) if identity.startswith("random:") else 0
    return {
        "model": arch.get("model", "ViT-B-16"),
        "reduced": bool(arch.get("reduced", False)),
        "quick_gelu": bool(arch.get("quick_gelu", True)),
        # a projection width other than the architecture's (a stream made by other tools, or
        # the narrow test stores of the released-model fixture); the extractor records none
        "embed_dim": int(arch["embed_dim"]) if arch.get("embed_dim") else None,
        "random": random_build,
        "seed": seed,
        "weights": info.weights,
        "sha256": info.weights_sha256,
        "stream": info.alias,
    }


def build_clip(source: dict[str, Any], text_weights: str = "") -> nn.Module:
    """The open_clip model the image stream came from (see the module docstring)."""
    import open_clip

    overrides: dict[str, Any] = dict(REDUCED_CFG) if source["reduced"] else {}
    if source.get("embed_dim"):
        overrides["embed_dim"] = source["embed_dim"]
    if source["random"] and not text_weights:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # random on purpose: not open_clip's "no weights" warning
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(source["seed"])
                return open_clip.create_model(source["model"], pretrained=None,
                                              force_quick_gelu=source["quick_gelu"],
                                              **overrides)
        finally:
            root.setLevel(level)
    path = Path(source["checkpoint"]) if source.get("checkpoint") else \
        checkpoint_path(source, text_weights)
    try:
        return open_clip.create_model(source["model"], pretrained=str(path),
                                      force_quick_gelu=source["quick_gelu"], **overrides)
    except (RuntimeError, KeyError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _user_error(f"{path}: not an open_clip {source['model']} checkpoint ({first})"
                          ) from None


def checkpoint_path(source: dict[str, Any], text_weights: str) -> Path:
    """The checkpoint file of the image stream's CLIP (sha256-checked), or a UserError."""
    if text_weights:
        path = Path(text_weights).expanduser()
        if not path.is_file():
            raise _user_error(f"text_weights={text_weights}: no such checkpoint file")
        return path
    recorded = str(source["weights"] or "")
    path = Path(recorded).expanduser() if recorded else None
    if path is None or not path.is_file():
        path = _hub_file(recorded) if recorded else None
    if path is None:
        raise _user_error(
            f"stream {source['stream']}: the CLIP text tower needs the image stream's weights "
            f"({recorded or 'unknown'}), which are not on this machine; put the checkpoint in "
            "the Hugging Face cache or pass --set text_weights=PATH (this tool never downloads)")
    if source["sha256"] and _sha256(path) != source["sha256"]:
        raise _user_error(
            f"{path}: sha256 differs from the weights stream {source['stream']} was extracted "
            "with; the text tower must come from the same CLIP as the image features")
    return path


class ClipTextTower(nn.Module):
    """CLIP's text transformer over token embeddings (so learned contexts can be spliced in).

    Frozen: no parameter requires grad; gradients still flow through it to the inputs.
    """

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ClipTextTower:
        return super().train(False)  # frozen: never dropout, whatever the parent's mode

    @property
    def width(self) -> int:
        return int(self.ln_final.weight.shape[0])

    @property
    def output_dim(self) -> int:
        projection = self.text_projection
        if isinstance(projection, nn.Linear):
            return int(projection.out_features)
        return int(projection.shape[1])

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(tokens)

    def forward(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[N, L, width] token embeddings of `tokens` [N, L] -> [N, output_dim] features."""
        eot = tokens.argmax(dim=-1)  # the end-of-text token has the largest id
        length = int(eot.max()) + 1
        x = embeddings[:, :length] + self.positional_embedding[:length].to(embeddings.dtype)
        mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        projection = self.text_projection
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def tokenize(sentences: list[str]) -> torch.Tensor:
    import open_clip

    return open_clip.tokenize(sentences)


class PromptLearner(nn.Module):
    """CoOp: `contexts` learned token vectors before each prompt sentence's tokens.

    One context per prompt sentence (class-specific: a class's three sentences each have their
    own, as in the RAPT-CLIP code where the ensemble's sentences are the CoOp "classes"); the
    class tokens come last. The start token and the sentence tokens are fixed embeddings.
    """

    def __init__(self, tower: ClipTextTower, sentences: list[str], contexts: int,
                 std: float) -> None:
        super().__init__()
        placeholder = " ".join(["X"] * contexts)
        tokens = tokenize([f"{placeholder} {s}" for s in sentences])
        with torch.no_grad():
            embedded = tower.embed(tokens)
        self.ctx = nn.Parameter(torch.randn(len(sentences), contexts, tower.width) * std)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("prefix", embedded[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", embedded[:, 1 + contexts:].clone(), persistent=False)

    def forward(self) -> torch.Tensor:
        return torch.cat([self.prefix, self.ctx.to(self.prefix.dtype), self.suffix], dim=1)
