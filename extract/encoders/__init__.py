"""Encoder registry: every encoder by name, built with `create_encoder(name, weights=...)`.

Like timm's `create_model` and torchaudio's pipeline bundles: the spec (modality, rates, output
dim, default weights) is data that is known before anything heavy is imported; the family module
imports its library only when an encoder is built.

    spec = get_spec("wav2vec2-base")
    encoder = create_encoder("wav2vec2-base", weights="default", device="cuda", layer=9)
    rows = encoder.encode_audio(wav_16k)          # [floor(N / 320), 768]
"""

from __future__ import annotations

from typing import Any

import torch

from extract.encoders import clip, dasheng, hsemotion, swin, text, vggish, wav2vec2
from extract.encoders.base import (
    EXTRACTOR_VERSION,
    AudioEncoder,
    Encoder,
    EncoderSpec,
    ImagePreprocess,
    Registration,
    TextEncoder,
    VideoEncoder,
)
from features_store.errors import UserError

__all__ = [
    "EXTRACTOR_VERSION",
    "AudioEncoder",
    "Encoder",
    "EncoderSpec",
    "ImagePreprocess",
    "TextEncoder",
    "VideoEncoder",
    "create_encoder",
    "get_spec",
    "list_encoders",
    "weights_available",
]

_FAMILIES = (clip, swin, hsemotion, vggish, wav2vec2, dasheng, text)
_REGISTRY: dict[str, Registration] = {
    entry.spec.name: entry for family in _FAMILIES for entry in family.REGISTRATIONS
}


def list_encoders() -> list[EncoderSpec]:
    """All registered encoders, in registry order (video, audio, text)."""
    return [entry.spec for entry in _REGISTRY.values()]


def _entry(name: str) -> Registration:
    if name not in _REGISTRY:
        raise UserError(f"unknown encoder {name!r}; known encoders: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def get_spec(name: str) -> EncoderSpec:
    return _entry(name).spec


def encoder_options(name: str) -> dict[str, Any]:
    """The options `create_encoder` accepts for `name`, with their defaults."""
    return dict(_entry(name).options)


def weights_available(name: str) -> bool:
    """Whether the default weights of `name` are in the local cache (never touches the network)."""
    return bool(_entry(name).available())


def create_encoder(
    name: str,
    weights: str = "default",
    device: str = "cpu",
    reduced: bool = False,
    **options: Any,
) -> Encoder:
    """Build encoder `name` with `weights`: "default" (library cache), "random" / "random:<seed>"
    (same architecture, seeded), or a local file/folder; `reduced=True` builds a smaller model of
    the same family for CPU tests. `options` are per encoder (see `encoder_options`)."""
    entry = _entry(name)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        accepted = ", ".join(entry.options) or "none"
        raise UserError(
            f"encoder {name} has no option {', '.join(unknown)} (accepted options: {accepted})"
        )
    chosen = {**entry.options, **options}
    encoder = entry.build(entry.spec, str(weights), bool(reduced), **chosen)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return encoder.to(device)
