"""What every encoder is: a declarative spec, a fingerprint of what determines its values, and
the per-modality calls the extraction runner makes (frames, waveform or text in; rows out)."""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract import versions
from extract.encoders.specs import EncoderSpec  # noqa: F401 (re-exported: the registry's data)

EXTRACTOR_VERSION = versions.ENCODERS_VERSION  # kept for importers; bump it in extract.versions


@dataclass(frozen=True)
class ImagePreprocess:
    """uint8 RGB frames -> normalised float tensor, the way the upstream transforms do it.

    A frozen dataclass of plain numbers so it pickles into decode workers without the model.
    Frames go through PIL and torchvision's functional ops, the same code path as the upstream
    `transforms.Compose`, so the tensors are identical to what the paper's code fed its model.
    """

    resize: int | tuple[int, int]  # int: shortest side to this; (h, w): exactly this size
    crop: int | None  # centre crop side, or None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # "bilinear" | "bicubic"

    @property
    def size(self) -> int:
        if self.crop is not None:
            return self.crop
        if isinstance(self.resize, tuple):
            return self.resize[0]
        return self.resize

    def describe(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {tuple(frames.shape)}"
            )
        mode = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[
            self.interpolation
        ]
        size = list(self.resize) if isinstance(self.resize, tuple) else self.resize
        out = torch.empty((len(frames), 3, self.size, self.size), dtype=torch.float32)
        for i, frame in enumerate(frames):
            image = F.resize(Image.fromarray(frame), size, interpolation=mode)
            if self.crop is not None:
                image = F.center_crop(image, [self.crop, self.crop])
            out[i] = F.normalize(F.to_tensor(image), list(self.mean), list(self.std))
        return out


@dataclass(frozen=True)
class Registration:
    """How the registry builds one named encoder."""

    spec: EncoderSpec
    options: Mapping[str, Any]  # accepted options and their defaults
    build: Callable[..., Encoder]  # build(spec, weights, reduced, **options) -> Encoder on CPU
    available: Callable[[], bool]  # default weights present in the local cache (no network)


def with_dim(spec: EncoderSpec, dim: int) -> EncoderSpec:
    """The spec of a built encoder whose output width differs (reduced builds, options)."""
    return spec if spec.dim == dim else replace(spec, dim=dim)


def alias_for(name: str, parts: list[str], weights_identity: str, reduced: bool) -> str:
    """Readable stream alias: name, option parts, and markers for random/reduced builds."""
    parts = list(parts)
    if weights_identity.startswith("random:"):
        parts.append("random")
    if reduced:
        parts.append("reduced")
    return "@".join([name, *parts])


def _jsonable(value: Any) -> Any:
    """Tuples become lists, numpy scalars become numbers: the fingerprint must round-trip JSON."""
    return json.loads(
        json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )


class Encoder(abc.ABC):
    """Base of all encoders. Subclasses hold the model and implement their modality's call."""

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        alias: str,
        weights_source: str,
        weights_identity: str,
        arch: dict[str, Any],
        preprocessing: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        self.spec = spec
        self.alias = alias
        self.weights_source = weights_source  # "random", a file path, or the hub id used
        self.weights_identity = weights_identity  # "sha256:<hex>" or "random:<seed>"
        self.arch = arch  # architecture config, including `reduced`
        self.preprocessing = preprocessing
        self.options = options
        self.device = torch.device("cpu")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.alias!r}, weights={self.weights_source!r})"

    def fingerprint(self) -> dict[str, Any]:
        """Everything that determines the values; the store hashes this into the stream key."""
        return _jsonable(
            {
                "name": self.spec.name,
                "modality": self.spec.modality,
                "dim": self.spec.dim,
                "frame_shift_s": self.spec.frame_shift_s,
                "arch": self.arch,
                "weights": self.weights_identity,
                "weights_sha256": self.weights_identity.removeprefix("sha256:")
                if self.weights_identity.startswith("sha256:")
                else None,
                "preprocessing": self.preprocessing,
                "options": self.options,
                "extractor_version": versions.stream_key_versions()["encoders"],
            }
        )

    @abc.abstractmethod
    def modules(self) -> list[torch.nn.Module]:
        """The torch modules that `to()` moves."""

    def to(self, device: str | torch.device) -> Encoder:
        self.device = torch.device(device)
        for module in self.modules():
            module.to(self.device)
        return self

    @abc.abstractmethod
    def save_weights(self, path: str | Path) -> Path:
        """Write the weights in the format `create_encoder(name, weights=path)` reads back."""


class VideoEncoder(Encoder):
    """Per-frame image encoder: `preprocess` on CPU (decode workers), `encode_batch` on device.

    `preprocessor` is picklable on its own; send it, not the encoder, to decode workers."""

    preprocessor: ImagePreprocess

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        return self.preprocessor(frames)

    def preprocessor_for(self, crop: str | None, view: Any = None) -> Any:
        """The frames -> tensor transform of a stream on `crop` ("face", "body" or None), with
        an augmented `view` (extract.views.View) applied to the frames first."""
        if view is None:
            return self.preprocessor
        from extract.views import ViewedFrames

        return ViewedFrames(view, self.preprocessor)

    def encode_batch(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True)
            return self.forward(x).float()

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] on self.device -> [N, D]."""


class AudioEncoder(Encoder):
    """Waveform encoder. Row i covers audio from i * frame_shift_s on, and an input of N samples
    gives floor(N / hop) rows (encoders pad the tail to make it so), so chunks that are a
    multiple of the hop concatenate into the same timeline as the whole clip."""

    def hop_samples(self) -> int:
        assert self.spec.frame_shift_s is not None and self.spec.sample_rate is not None
        return int(round(self.spec.frame_shift_s * self.spec.sample_rate))

    def expected_rows(self, n_samples: int) -> int:
        return n_samples // self.hop_samples()

    def encode_audio(self, wav: np.ndarray) -> np.ndarray:
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected mono float32 audio [samples], got shape {wav.shape}")
        n_rows = self.expected_rows(len(wav))
        if n_rows == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        with torch.inference_mode():
            rows = self.forward(torch.from_numpy(wav).to(self.device))
        rows = rows[:n_rows].float().cpu().numpy()
        if rows.shape != (n_rows, self.spec.dim):
            raise RuntimeError(
                f"{self.alias}: got rows {rows.shape}, expected {(n_rows, self.spec.dim)}"
            )
        return rows

    @abc.abstractmethod
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """1-D waveform on self.device -> [T, D] with T >= floor(N / hop)."""


class TextEncoder(Encoder):
    """One row per utterance."""

    @abc.abstractmethod
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """N strings -> float32 [N, D]."""


class TimmImageEncoder(VideoEncoder):
    """A timm image model used up to its pooled features (the classifier's input)."""

    def __init__(
        self, model: torch.nn.Module, preprocessor: ImagePreprocess, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.model = model.eval()
        self.preprocessor = preprocessor

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def save_weights(self, path: str | Path) -> Path:
        return save_tensors(self.model.state_dict(), path)


def save_tensors(state: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write a state dict as safetensors (by suffix) or a plain torch file."""
    path = Path(path)
    state = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
