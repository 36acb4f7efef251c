"""Encoder registry: every encoder by name, built with `create_encoder(name, weights=...)`.

Like timm's `create_model` and torchaudio's pipeline bundles: the spec (modality, rates, output
dim, default weights) is data that is known before anything heavy is imported; the family module
imports its library only when an encoder is built.

    spec = get_spec("wav2vec2-base")
    encoder = create_encoder("wav2vec2-base", weights="default", device="cuda", layer=9)
    rows = encoder.encode_audio(wav_16k)          # [floor(N / 320), 768]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from extract.encoders.specs import CATALOG, CatalogEntry, EncoderSpec
from features_store.errors import UserError

if TYPE_CHECKING:
    from extract.encoders.base import Encoder, Registration

# Listing needs only the catalog (torch-free); these come from the family code on first use.
_FROM_BASE = ("EXTRACTOR_VERSION", "AudioEncoder", "Encoder", "ImagePreprocess", "TextEncoder",
              "VideoEncoder")

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

_CATALOG: dict[str, CatalogEntry] = {entry.spec.name: entry for entry in CATALOG}


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        return getattr(importlib.import_module("extract.encoders.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def list_encoders() -> list[EncoderSpec]:
    """All registered encoders, in registry order (video, audio, text)."""
    return [entry.spec for entry in CATALOG]


def _entry(name: str) -> CatalogEntry:
    if name not in _CATALOG:
        raise UserError(f"unknown encoder {name!r}; known encoders: {', '.join(_CATALOG)}")
    return _CATALOG[name]


def _registration(name: str) -> Registration:
    """The family module's build entry for `name` (imports that family's libraries)."""
    family = importlib.import_module(f"extract.encoders.{_entry(name).family}")
    return next(r for r in family.REGISTRATIONS if r.spec.name == name)


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
    encoder = _registration(name).build(entry.spec, str(weights), bool(reduced), **chosen)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return encoder.to(device)
