"""CLIP ViT-B/16 image encoder (open_clip): 512-d projected embedding per frame, or the 768-d
pooled token before the projection (`projected=False`).

The activation follows the weights. OpenAI's ViT-B/16 (and a few others) was trained with
QuickGELU, LAION's and DataComp's with GELU; open_clip's pretrained tags say which
(`get_pretrained_cfg(arch, tag)["quick_gelu"]`). Option `pretrained_tag` names the weights
(default "openai"): `--weights default` loads that tag's checkpoint from the hub cache; a local
file found in a tag's hub cache folder is that tag; any other local file is taken to be
`pretrained_tag` (say so for a LAION file: `pretrained_tag=laion2b_s34b_b88k`), or set the
activation directly with `quick_gelu=True|False`. The fingerprint records the activation and
where it came from.

Option `preprocess`: "open_clip" (its eval transform, above) or "rapt", the input RAPT-CLIP's
released loader feeds CLIP ([0,1] pixels without mean/std, faces squashed, bodies letterboxed:
extract/encoders/rapt_input.py). The stream key and the alias (`clip-vit-b16@rapt@face`) say
which.
"""

from __future__ import annotations

import pickle
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
from extract.encoders.rapt_input import RaptInput
from extract.encoders.specs import CLIP_DEFAULT_TAG, CLIP_OPTIONS, CLIP_PREPROCESS
from extract.encoders.specs import CLIP_HF_FILES as HF_FILES
from extract.encoders.specs import CLIP_HF_REPO as HF_REPO
from extract.encoders.specs import CLIP_SPEC as SPEC
from extract.encoders.specs import clip_available as available
from extract.encoders.weights import (
    PICKLE_HINT,
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


def tag_config(tag: str) -> dict[str, Any]:
    """open_clip's pretrained config of ViT-B-16 weights `tag` (UserError for an unknown tag)."""
    import open_clip

    config = open_clip.get_pretrained_cfg(ARCH, tag)
    if not config:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(ARCH))
        raise UserError(f"clip-vit-b16: pretrained_tag={tag!r} is not an open_clip {ARCH} tag "
                        f"({tags})")
    return config


DEFAULT_TAG = CLIP_DEFAULT_TAG


def tag_hf_repo(tag: str) -> str:
    if tag == DEFAULT_TAG:  # known without importing open_clip (a fast missing-weights error)
        return HF_REPO
    return str(tag_config(tag).get("hf_hub", "")).strip("/") or HF_REPO


def _locator(tag: str):
    def locate() -> tuple[Path, str]:
        repo = tag_hf_repo(tag)
        hit = hf_cached_file(repo, HF_FILES)
        if hit is None:
            raise missing_default(
                SPEC.name,
                f"{repo}/{HF_FILES[0]}",
                f"https://huggingface.co/{repo} (huggingface-cli download {repo} {HF_FILES[0]})",
                hf_hub_cache(),
            )
        return hit, repo

    return locate


def _cached_tag(path: Path) -> str | None:
    """The open_clip tag whose hub cache folder holds `path`, if any."""
    import open_clip

    resolved = str(Path(path).resolve())
    for tag in open_clip.list_pretrained_tags_by_model(ARCH):
        repo = tag_hf_repo(tag)
        if f"models--{repo.replace('/', '--')}" in resolved:
            return tag
    return None


def activation_for(choice: Weights, weights: str, tag: str,
                   quick_gelu: bool | None) -> tuple[bool, str]:
    """(quick_gelu, where that came from) for these weights (see the module docstring)."""
    if quick_gelu is not None:
        return bool(quick_gelu), "option quick_gelu"
    if choice.path is not None and weights != "default":
        found = _cached_tag(choice.path)
        if found is not None:
            tag = found
    return bool(tag_config(tag).get("quick_gelu", False)), f"open_clip tag {tag}"


class ClipEncoder(VideoEncoder):
    def __init__(self, model: torch.nn.Module, projected: bool, input_transform: str = "open_clip",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The whole CLIP model is kept so save_weights writes a checkpoint open_clip itself
        # loads; only the visual tower is ever moved to the device.
        self.clip = model.eval()
        self.visual = model.visual
        self.projected = projected
        self.input_transform = input_transform
        self.preprocessor = PREPROCESS if input_transform == "open_clip" else \
            RaptInput("letterbox")

    def preprocessor_for(self, crop: str | None, view: Any = None) -> Any:
        if self.input_transform == "open_clip":
            return super().preprocessor_for(crop, view)
        # the released loader squashes face crops and letterboxes bodies (or whole frames)
        return RaptInput("squash" if crop == "face" else "letterbox", view=view)

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
    spec: EncoderSpec, weights: str, reduced: bool, projected: bool, pretrained_tag: str,
    quick_gelu: bool | None, preprocess: str = "open_clip",
) -> ClipEncoder:
    if preprocess not in CLIP_PREPROCESS:
        raise UserError(f"clip-vit-b16: preprocess={preprocess!r}: use one of "
                        f"{', '.join(CLIP_PREPROCESS)}")
    if pretrained_tag != DEFAULT_TAG:
        tag_config(pretrained_tag)  # an unknown tag is a user error before anything else
    choice: Weights = resolve(spec.name, weights, _locator(pretrained_tag))
    import open_clip  # after resolving: a missing-weights error should not wait for it

    quick_gelu, activation_source = activation_for(choice, str(weights), pretrained_tag,
                                                   quick_gelu)
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
        except pickle.UnpicklingError:
            # torch's message spans lines and ends in advice to unpickle anyway: never.
            raise UserError(f"{choice.path}: not a plain state dict: {PICKLE_HINT}") from None
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
        "activation": "QuickGELU" if quick_gelu else "GELU",
        "activation_source": activation_source,
        "vision_layers": len(visual.transformer.resblocks),
        "vision_width": width,
        "patch_size": visual.patch_size[0] if isinstance(visual.patch_size, tuple) else None,
        "output": "projected" if projected else "pre-projection",
    }
    markers = ([] if projected else ["preproj"]) + (["rapt"] if preprocess == "rapt" else [])
    options: dict[str, Any] = {"projected": projected, "quick_gelu": quick_gelu}
    if preprocess == "open_clip":
        preprocessing = PREPROCESS.describe()
    else:  # only then in the key: streams made before the option keep theirs
        options["preprocess"] = preprocess
        preprocessing = {"rapt": {crop: RaptInput(fit).describe() for crop, fit in
                                  (("face", "squash"), ("body", "letterbox"),
                                   ("whole", "letterbox"))}}
    return ClipEncoder(
        model,
        projected,
        preprocess,
        spec=with_dim(spec, dim),
        alias=alias_for(spec.name, markers, choice.identity, reduced),
        weights_source=choice.source,
        weights_identity=choice.identity,
        arch=arch,
        preprocessing=preprocessing,
        options=options,
    )



REGISTRATIONS = [
    Registration(
        spec=SPEC,
        options=CLIP_OPTIONS,
        build=build,
        available=available,
    )
]
