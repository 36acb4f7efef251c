"""Dasheng base (the `dasheng` package): 768-d per 40 ms from 16 kHz audio.

Dasheng computes a 64-band mel spectrogram (10 ms hop), patches it 4 frames at a time and runs
its transformer over segments of 1008 frames (10.08 s); `chunk_s` is that segment length, so
the runner's chunks are the model's own. Its centred STFT gives floor((N / 160 + 1) / 4) patches;
rows past floor(N / 640) cover padding only and are dropped, so chunks concatenate on one grid.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from extract.encoders.base import AudioEncoder, EncoderSpec, Registration, alias_for, with_dim
from extract.encoders.specs import DASHENG_FILENAME as FILENAME
from extract.encoders.specs import DASHENG_SPEC as SPEC
from extract.encoders.specs import DASHENG_URL as URL
from extract.encoders.specs import dasheng_available as available
from extract.encoders.weights import (
    PICKLE_HINT,
    load_state_dict,
    load_strict,
    missing_default,
    one_line,
    resolve,
    seeded,
    torch_hub_checkpoint,
)
from features_store.errors import UserError

# dasheng.dasheng_base(): the package's defaults with these three set.
BASE_CONFIG: dict[str, Any] = {"embed_dim": 768, "depth": 12, "num_heads": 12}
REDUCED_CONFIG: dict[str, Any] = {"embed_dim": 64, "depth": 2, "num_heads": 2}


def _locate_default() -> tuple[Path, str]:
    path = torch_hub_checkpoint(FILENAME)
    if not path.is_file():
        raise missing_default(SPEC.name, FILENAME, URL, path.parent)
    return path, str(path)


class DashengEncoder(AudioEncoder):
    def __init__(self, model: torch.nn.Module, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model.eval()  # eval: its input BatchNorm must use the stored statistics
        self.config = config

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model(wav[None])[0]

    def save_weights(self, path: str | Path) -> Path:
        # The layout dasheng's own from_pretrained reads.
        path = Path(path)
        state = {k: v.cpu() for k, v in self.model.state_dict().items()}
        torch.save({"model": state, "config": self.config}, path)
        return path


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """dasheng's {"model": state_dict, "config": kwargs} dump, or a bare state dict."""
    if path.suffix not in (".safetensors", ".npz"):
        try:
            dump = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise UserError(f"{path}: not a plain checkpoint: {PICKLE_HINT}") from error
        except Exception as error:  # corrupt or foreign files raise many types
            raise UserError(f"{path}: cannot read weights ({one_line(error)})") from error
        if isinstance(dump, dict) and isinstance(dump.get("config"), dict) and "model" in dump:
            return dict(dump["model"]), dict(dump["config"])
    return load_state_dict(path), None


def build(spec: EncoderSpec, weights: str, reduced: bool) -> DashengEncoder:
    choice = resolve(spec.name, weights, _locate_default)
    from dasheng.pretrained.pretrained import Dasheng

    config = dict(REDUCED_CONFIG if reduced else BASE_CONFIG)
    if choice.path is None:
        with seeded(choice.seed):
            model = Dasheng(**config)
    else:
        state, stored = _read_checkpoint(choice.path)
        if stored is not None:
            # As Dasheng.from_pretrained: the checkpoint's own config decides the architecture.
            config = stored
        try:
            model = Dasheng(**config)
        except TypeError as error:
            raise UserError(
                f"{choice.path}: config does not fit Dasheng ({one_line(error)})"
            ) from error
        load_strict(model, state, choice.path, f"Dasheng ({config})")
    arch = {"model": "Dasheng", "reduced": reduced, **config}
    return DashengEncoder(
        model,
        config,
        spec=with_dim(spec, model.embed_dim),
        alias=alias_for(spec.name, [], choice.identity, reduced),
        weights_source=choice.source,
        weights_identity=choice.identity,
        arch=arch,
        preprocessing={
            "sample_rate": 16000,
            "frontend": "dasheng's own mel spectrogram (part of the model)",
            "rows": "floor(N / 640); rows over the tail padding dropped",
        },
        options={},
    )


REGISTRATIONS = [Registration(SPEC, {}, build, available)]
