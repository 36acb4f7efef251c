"""Swin-T image encoder (timm `swin_tiny_patch4_window7_224`): 768-d per frame after the final
norm and average pool.

REACT used a Swin-T fine-tuned on facial expressions, given by path; the default is timm's
ImageNet checkpoint. Both go through timm's checkpoint filter, so original Microsoft-layout
checkpoints load too; the classifier of whatever the checkpoint was trained on is dropped.

Preprocessing comes with the weights (option `preprocess`, recorded in the fingerprint):
  react  resize 256 (bilinear), centre crop 224, mean/std 0.5: the REACT baseline's transform
         (regnn/feature_extraction.py) for its FER Swin-T, so the default for a local file
         (the baseline's checkpoint is given by path) and for random weights;
  timm   timm's data config of the ImageNet checkpoint: bicubic resize to floor(224 / 0.9) =
         248, centre crop 224, ImageNet mean/std; the default for `--weights default` (and a
         file from timm's own hub cache folder).
  auto   (default) the above rule; `preprocess=react|timm` overrides it.
"""

from __future__ import annotations

import math
from pathlib import Path

from extract.encoders.base import (
    EncoderSpec,
    ImagePreprocess,
    Registration,
    TimmImageEncoder,
    alias_for,
    with_dim,
)
from extract.encoders.specs import SWIN_HF_FILES as HF_FILES
from extract.encoders.specs import SWIN_HF_REPO as HF_REPO
from extract.encoders.specs import SWIN_OPTIONS
from extract.encoders.specs import SWIN_SPEC as SPEC
from extract.encoders.specs import swin_available as available
from extract.encoders.weights import (
    hf_cached_file,
    hf_hub_cache,
    load_strict,
    missing_default,
    one_line,
    resolve,
    seeded,
)
from features_store.errors import UserError

MODEL = "swin_tiny_patch4_window7_224"

REACT_PREPROCESS = ImagePreprocess(
    resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear"
)
PREPROCESS = REACT_PREPROCESS  # kept for importers; the REACT transform
PREPROCESS_CHOICES = ("auto", "react", "timm")


def timm_preprocess(model) -> ImagePreprocess:
    """timm's data config of `model`'s pretrained tag as an ImagePreprocess (its eval transform:
    resize the short side to floor(size / crop_pct), centre crop, normalise)."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    size = int(config["input_size"][-1])
    if config.get("crop_mode", "center") != "center":
        raise UserError(f"{MODEL}: timm crop_mode {config['crop_mode']!r} is not supported")
    return ImagePreprocess(
        resize=math.floor(size / float(config["crop_pct"])), crop=size,
        mean=tuple(float(v) for v in config["mean"]), std=tuple(float(v) for v in config["std"]),
        interpolation=str(config["interpolation"]))


def _preprocess_for(choice, weights: str, preprocess: str) -> str:
    """Which transform goes with these weights (see the module docstring)."""
    if preprocess not in PREPROCESS_CHOICES:
        raise UserError(f"swin-t: preprocess={preprocess!r}, choose one of "
                        f"{', '.join(PREPROCESS_CHOICES)}")
    if preprocess != "auto":
        return preprocess
    if weights == "default":
        return "timm"
    if choice.path is not None and HF_REPO.replace("/", "--") in str(Path(choice.path).resolve()):
        return "timm"  # timm's own checkpoint, passed by its path in the hub cache
    return "react"

# Reduced: the same 4-stage Swin at 224 with width 32 and one block per stage (256-d out).
REDUCED_KWARGS = {"embed_dim": 32, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 4)}


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


def build(spec: EncoderSpec, weights: str, reduced: bool, preprocess: str) -> TimmImageEncoder:
    choice = resolve(spec.name, weights, _locate_default)
    transform = _preprocess_for(choice, str(weights), str(preprocess))
    import timm
    from timm.models import load_state_dict as timm_load_state_dict
    from timm.models.swin_transformer import checkpoint_filter_fn

    kwargs = dict(REDUCED_KWARGS) if reduced else {}
    with seeded(choice.seed):
        model = timm.create_model(MODEL, pretrained=False, num_classes=0, **kwargs)
    if choice.path is not None:
        what = f"timm {MODEL}{' (reduced)' if reduced else ''}"
        try:
            # timm's reader: safetensors or weights_only torch.load, EMA/'state_dict'/'model'
            # unwrapping; then its Swin filter (Microsoft layout -> timm, table resizing).
            state = checkpoint_filter_fn(timm_load_state_dict(str(choice.path)), model)
        except Exception as error:  # unreadable or foreign files raise many types
            raise UserError(f"{choice.path}: cannot read as {what} ({one_line(error)})") from error
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        load_strict(model, state, choice.path, what)
    arch = {"model": MODEL, "reduced": reduced, "num_classes": 0, **kwargs}
    steps = timm_preprocess(model) if transform == "timm" else REACT_PREPROCESS
    return TimmImageEncoder(
        model,
        steps,
        spec=with_dim(spec, model.num_features),
        # one alias whatever the weights (recipes read `swin-t`); the key tells them apart
        alias=alias_for(spec.name, [], choice.identity, reduced),
        weights_source=choice.source,
        weights_identity=choice.identity,
        arch=arch,
        preprocessing={"transform": transform, **steps.describe()},
        options={"preprocess": transform},
    )


REGISTRATIONS = [Registration(spec=SPEC, options=SWIN_OPTIONS, build=build,
                              available=available)]
