"""wav2vec 2.0 base (transformers `Wav2Vec2Model`, `facebook/wav2vec2-base-960h`): 768-d hidden
states at 20 ms from 16 kHz audio, any layer or all of them.

Input is normalised to zero mean and unit variance per call (the checkpoint's feature extractor
has do_normalize=True), then padded at the tail by (receptive field - stride) = 80 zero samples
so N samples give floor(N / 320) rows: chunks of the clip then line up on one 20 ms grid.

`layer`: 0 is the output of the CNN feature projection plus positional convolution (the
transformer's input), L the last transformer layer (default). `layer="all"` returns every hidden
state side by side: row width (L + 1) * 768, columns [l * 768, (l + 1) * 768) hold layer l.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from extract.encoders.base import AudioEncoder, EncoderSpec, Registration, alias_for, with_dim
from extract.encoders.specs import WAV2VEC2_HF_REPO as HF_REPO
from extract.encoders.specs import WAV2VEC2_HF_REQUIRED as HF_REQUIRED
from extract.encoders.specs import WAV2VEC2_OPTIONS
from extract.encoders.specs import WAV2VEC2_SPEC as SPEC
from extract.encoders.specs import wav2vec2_available as available
from extract.encoders.weights import (
    hf_cached_snapshot,
    hf_hub_cache,
    load_state_dict,
    load_strict,
    missing_default,
    one_line,
    resolve,
    seeded,
)
from features_store.errors import UserError

# wav2vec2-base-960h's architecture (transformers' defaults, written out so it is on record).
BASE_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "conv_dim": (512,) * 7,
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_bias": False,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}
# Reduced: same CNN strides/kernels (same 20 ms grid), width 64, 2 transformer layers.
REDUCED_CONFIG: dict[str, Any] = {
    **BASE_CONFIG,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "conv_dim": (32,) * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}
# Heads of the CTC / pre-training checkpoints that are not part of Wav2Vec2Model.
FOREIGN_PREFIXES = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "dropout_features.")


def _locate_default() -> tuple[Path, str]:
    folder = hf_cached_snapshot(HF_REPO, HF_REQUIRED)
    if folder is None:
        raise missing_default(
            SPEC.name,
            f"{HF_REPO} config.json + model weights",
            f"https://huggingface.co/{HF_REPO} (huggingface-cli download {HF_REPO})",
            hf_hub_cache(),
        )
    return folder, HF_REPO


def receptive_field(kernels: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, int]:
    """(samples seen by one output frame, samples between frames) of the CNN feature encoder."""
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides):
        field += (kernel - 1) * jump
        jump *= stride
    return field, jump


class Wav2Vec2Encoder(AudioEncoder):
    def __init__(self, model: torch.nn.Module, layer: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model.eval()
        self.layer = layer  # None = all layers
        config = model.config
        field, stride = receptive_field(tuple(config.conv_kernel), tuple(config.conv_stride))
        self.tail_pad = field - stride

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-7)
        x = torch.nn.functional.pad(x, (0, self.tail_pad))
        hidden = self.model(x[None], output_hidden_states=True).hidden_states
        if self.layer is None:
            return torch.cat(hidden, dim=-1)[0]
        return hidden[self.layer][0]

    def save_weights(self, path: str | Path) -> Path:
        path = Path(path)
        self.model.save_pretrained(path)
        return path


def _load(path: Path, config: Any) -> torch.nn.Module:
    from transformers import Wav2Vec2Model

    if path.is_dir():
        try:
            return Wav2Vec2Model.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError, RuntimeError) as error:
            raise UserError(f"{path}: not a wav2vec2 model folder ({one_line(error)})") from error
    model = Wav2Vec2Model(config)
    state = {k.removeprefix("wav2vec2."): v for k, v in load_state_dict(path).items()}
    state = {k: v for k, v in state.items() if not k.startswith(FOREIGN_PREFIXES)}
    load_strict(model, state, path, f"Wav2Vec2Model ({config.num_hidden_layers} layers)")
    return model


def build(
    spec: EncoderSpec, weights: str, reduced: bool, layer: int | str | None
) -> Wav2Vec2Encoder:
    choice = resolve(spec.name, weights, _locate_default)
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(**(REDUCED_CONFIG if reduced else BASE_CONFIG))
    if choice.path is None:
        with seeded(choice.seed):
            model = Wav2Vec2Model(config)
    else:
        model = _load(choice.path, config)
    n_layers = model.config.num_hidden_layers
    if layer == "all":
        chosen: int | None = None
    elif layer is None:
        chosen = n_layers
    elif str(layer).isdigit() and 0 <= int(layer) <= n_layers:
        chosen = int(layer)
    else:
        raise UserError(f"encoder {spec.name}: layer {layer!r} is not 0..{n_layers} or 'all'")
    width = model.config.hidden_size
    dim = width * (n_layers + 1) if chosen is None else width
    arch = {
        "model": "Wav2Vec2Model",
        "reduced": reduced,
        **{key: model.config.to_dict()[key] for key in BASE_CONFIG},
    }
    return Wav2Vec2Encoder(
        model,
        chosen,
        spec=with_dim(spec, dim),
        alias=alias_for(
            spec.name, ["all" if chosen is None else f"layer{chosen}"], choice.identity, reduced
        ),
        weights_source=choice.source,
        weights_identity=choice.identity,
        arch=arch,
        preprocessing={
            "sample_rate": 16000,
            "normalize": "zero-mean unit-variance per call (eps 1e-7)",
            "tail_pad_samples": receptive_field(
                tuple(model.config.conv_kernel), tuple(model.config.conv_stride)
            )[0]
            - 320,
            "layer": "all" if chosen is None else chosen,
            "layout": "layers side by side, layer-major" if chosen is None else "one layer",
        },
        options={"layer": "all" if chosen is None else chosen},
    )


REGISTRATIONS = [Registration(SPEC, WAV2VEC2_OPTIONS, build, available)]
