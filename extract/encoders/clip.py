"""CLIP ViT-B/16 image encoder (open_clip): 512-d projected embedding per frame, or the 768-d
pooled token before the projection (`projected=False`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from extract.encoders.base import (
    EncoderSpec,
    ImagePreprocess,
    Registration,
    VideoEncoder,
    alias_for,
    with_dim,
)
from extract.encoders.specs import CLIP_HF_FILES as HF_FILES
from extract.encoders.specs import CLIP_HF_REPO as HF_REPO
from extract.encoders.specs import CLIP_OPTIONS
from extract.encoders.specs import CLIP_SPEC as SPEC
from extract.encoders.specs import clip_available as available
from extract.encoders.weights import (
    Weights,
    hf_cached_file,
    hf_hub_cache,
    missing_default,
    one_line,
    resolve,
    seeded,
)
from features_store.errors import UserError

ARCH = "ViT-B-16"

# open_clip's eval transform for the OpenAI weights: shortest side to 224 (bicubic), centre
# crop, OpenAI mean/std.
PREPROCESS = ImagePreprocess(
    resize=224,
    crop=224,
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
    interpolation="bicubic",
)

# Reduced: same ViT-B/16 patching, input size and projection size, 2 layers of width 64 and
# a 1-layer text tower, so CPU tests run in milliseconds.
REDUCED_CFG: dict[str, Any] = {
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _locate_default() -> tuple[Path, str]:
    hit = hf_cached_file(HF_REPO, HF_FILES)
    if hit is None:
        raise missing_default(
            SPEC.name,
            f"{HF_REPO}/{HF_FILES[0]}",
            f"https://huggingface.co/{HF_REPO} (huggingface-cli download {HF_REPO} {HF_FILES[0]})",
            hf_hub_cache(),
        )
    return hit, HF_REPO


class ClipEncoder(VideoEncoder):
    def __init__(self, model: torch.nn.Module, projected: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The whole CLIP model is kept so save_weights writes a checkpoint open_clip itself
        # loads; only the visual tower is ever moved to the device.
        self.clip = model.eval()
        self.visual = model.visual
        self.projected = projected
        self.preprocessor = PREPROCESS

    def modules(self) -> list[torch.nn.Module]:
        return [self.visual]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.projected:
            return self.visual(x)
        # open_clip's VisionTransformer.forward is embeds -> transformer -> pool -> @ proj;
        # stopping before the projection gives the pooled, ln_post-normalised 768-d token.
        pooled, _ = self.visual._pool(self.visual.transformer(self.visual._embeds(x)))
        return pooled

    def save_weights(self, path: str | Path) -> Path:
        path = Path(path)
        torch.save({k: v.cpu() for k, v in self.clip.state_dict().items()}, path)
        return path


def build(
    spec: EncoderSpec, weights: str, reduced: bool, projected: bool, quick_gelu: bool
) -> ClipEncoder:
    choice: Weights = resolve(spec.name, weights, _locate_default)
    import open_clip  # after resolving: a missing-weights error should not wait for it

    overrides = dict(REDUCED_CFG) if reduced else {}
    if choice.is_random:
        with seeded(choice.seed):
            model = open_clip.create_model(
                ARCH, pretrained=None, force_quick_gelu=quick_gelu, **overrides
            )
    else:
        try:
            # pretrained=<file> goes through open_clip's own checkpoint loader (strict).
            model = open_clip.create_model(
                ARCH, pretrained=str(choice.path), force_quick_gelu=quick_gelu, **overrides
            )
        except (RuntimeError, KeyError, ValueError) as error:
            raise UserError(
                f"{choice.path}: not an open_clip {ARCH} checkpoint"
                f"{' (reduced)' if reduced else ''} ({one_line(error)})"
            ) from error
    visual = model.visual
    width = visual.transformer.width
    dim = visual.output_dim if projected else width
    arch = {
        "model": ARCH,
        "reduced": reduced,
        "quick_gelu": quick_gelu,
        "vision_layers": len(visual.transformer.resblocks),
        "vision_width": width,
        "patch_size": visual.patch_size[0] if isinstance(visual.patch_size, tuple) else None,
        "output": "projected" if projected else "pre-projection",
    }
    return ClipEncoder(
        model,
        projected,
        spec=with_dim(spec, dim),
        alias=alias_for(spec.name, [] if projected else ["preproj"], choice.identity, reduced),
        weights_source=choice.source,
        weights_identity=choice.identity,
        arch=arch,
        preprocessing=PREPROCESS.describe(),
        options={"projected": projected, "quick_gelu": quick_gelu},
    )


REGISTRATIONS = [
    Registration(
        spec=SPEC,
        options=CLIP_OPTIONS,
        build=build,
        available=available,
    )
]
