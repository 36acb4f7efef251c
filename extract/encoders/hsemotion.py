"""HSEmotion EfficientNet-B0 (`enet_b0_8_best_afew`): 1280-d per face crop, the input of its
8-class emotion classifier, with HSEmotion's preprocessing (resize to 224 x 224, no crop,
ImageNet mean/std).

HSEmotion publishes a whole pickled timm model, and unpickling runs arbitrary code. We cannot
know the published file's sha256 offline, so we never unpickle: we build timm `efficientnet_b0`
(8 classes) ourselves and accept only tensors (a state dict saved with torch.save, or
safetensors). A pickled model is refused with the one command that converts it, to be run by a
user who trusts the file.

Option `face_crop`: "none" encodes the frame (or the dataset's crop) as it comes; "mtcnn" first
crops the largest face with MTCNN as the released Affective-TRM encoder does
(extract/encoders/face_crop.py; recorded in the stream key and the alias `@mtcnn`), and a frame
without a face gets a row of zeros.
"""

from __future__ import annotations

from pathlib import Path

import torch

from extract.encoders.base import (
    EncoderSpec,
    ImagePreprocess,
    Registration,
    TimmImageEncoder,
    alias_for,
    with_dim,
)
from extract.encoders.face_crop import FACE_CROPS, MtcnnFaceCrop, detector_identity
from extract.encoders.specs import HSEMOTION_CHECKPOINT as CHECKPOINT
from extract.encoders.specs import HSEMOTION_OPTIONS as OPTIONS
from extract.encoders.specs import HSEMOTION_SPEC as SPEC
from extract.encoders.specs import HSEMOTION_URL as URL
from extract.encoders.specs import hsemotion_available as available
from extract.encoders.specs import hsemotion_cache_dir as cache_dir
from extract.encoders.weights import (
    load_state_dict,
    load_strict,
    resolve,
    seeded,
)
from features_store.errors import UserError

MODEL = "efficientnet_b0"
NUM_CLASSES = 8

PREPROCESS = ImagePreprocess(
    resize=(224, 224),
    crop=None,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    interpolation="bilinear",
)


def convert_command(src: Path | str, dst: Path | str) -> str:
    return (
        'python -c "import torch, safetensors.torch as st; '
        f"st.save_file(torch.load('{src}', weights_only=False).state_dict(), '{dst}')\""
    )


def _pickle_hint(path: Path) -> str:
    dst = path.with_suffix(".safetensors")
    return (
        "it is a pickled whole model (HSEmotion's published format), which we never unpickle; "
        f"if you trust the file, convert it once with {convert_command(path, dst)} "
        f"and pass --weights {dst}"
    )


def _locate_default() -> tuple[Path, str]:
    converted = cache_dir() / f"{CHECKPOINT}.safetensors"
    if converted.is_file():
        return converted, str(converted)
    published = cache_dir() / f"{CHECKPOINT}.pt"
    if published.is_file():  # read safely below; a pickled model is refused with the hint
        return published, str(published)
    raise UserError(
        f"encoder {SPEC.name}: default weights not in {cache_dir()}; download {URL} there, "
        f"convert it with {convert_command(published, converted)} "
        "(this tool never downloads or unpickles), or pass --weights PATH"
    )


REDUCED_MULTIPLIERS = {"channel_multiplier": 0.25, "depth_multiplier": 0.34}


def _timm_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Some HSEmotion models wrap the classifier in nn.Sequential (classifier.0.*).
    return {k.replace("classifier.0.", "classifier.", 1): v for k, v in state.items()}


class FaceCropTimmEncoder(TimmImageEncoder):
    """The timm model on face crops: an input of NaN (no face in the frame) -> a row of zeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        no_face = torch.isnan(x).flatten(1).any(1)
        features = super().forward(torch.nan_to_num(x))
        return features.masked_fill(no_face[:, None], 0.0)


def build(spec: EncoderSpec, weights: str, reduced: bool,
          face_crop: str = "none") -> TimmImageEncoder:
    if face_crop not in FACE_CROPS:
        raise UserError(f"encoder {spec.name}: face_crop={face_crop!r}: use one of "
                        f"{', '.join(FACE_CROPS)}")
    choice = resolve(spec.name, weights, _locate_default)
    import timm

    with seeded(choice.seed):
        if reduced:
            # The same EfficientNet-B0 generator at a quarter width and a third of the depth
            # (timm's entrypoint fixes the multipliers, so call its generator directly).
            from timm.models.efficientnet import _gen_efficientnet

            model = _gen_efficientnet(MODEL, pretrained=False, num_classes=NUM_CLASSES,
                                      **REDUCED_MULTIPLIERS)
        else:
            model = timm.create_model(MODEL, pretrained=False, num_classes=NUM_CLASSES)
    if choice.path is not None:
        state = _timm_keys(load_state_dict(choice.path, pickled_hint=_pickle_hint(choice.path)))
        # The classifier is not used for features; a headless state dict is fine.
        load_strict(
            model,
            state,
            choice.path,
            f"timm {MODEL} with {NUM_CLASSES} classes",
            may_miss=lambda key: key.startswith("classifier."),
        )
    arch = {"model": MODEL, "num_classes": NUM_CLASSES, "reduced": reduced,
            **(REDUCED_MULTIPLIERS if reduced else {})}
    if face_crop == "mtcnn":
        crop = MtcnnFaceCrop(PREPROCESS)
        return FaceCropTimmEncoder(
            model, crop, spec=with_dim(spec, model.num_features),
            alias=alias_for(spec.name, ["mtcnn"], choice.identity, reduced),
            weights_source=choice.source, weights_identity=choice.identity,
            arch={**arch, "detector": detector_identity()},
            preprocessing=crop.describe(), options={"face_crop": face_crop})
    return TimmImageEncoder(
        model,
        PREPROCESS,
        spec=with_dim(spec, model.num_features),
        alias=alias_for(spec.name, [], choice.identity, reduced),
        weights_source=choice.source,
        weights_identity=choice.identity,
        arch=arch,
        preprocessing=PREPROCESS.describe(),
        options={},
    )


REGISTRATIONS = [Registration(spec=SPEC, options=OPTIONS, build=build, available=available)]
