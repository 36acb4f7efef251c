"""VGGish: our torch port of the AudioSet VGGish network and its log-mel frontend.

The network's state dict uses torchvggish's key names (`features.*`, `embeddings.*`), so the
torchvggish release `vggish-10086976.pth` loads as is. The frontend follows the original
`mel_features.py`: 25 ms periodic-Hann frames, |rfft| magnitude, HTK-mel triangles built in the
mel domain over 125-7500 Hz (DC bin zeroed), log(mel + 0.01), examples of 96 frames x 64 bands.

Two registered variants share the network:
- `vggish`: 16 kHz, 10 ms STFT hop, 0.96 s examples and hop -> 128-d per 0.96 s;
- `vggish-react`: REACT's per-frame variant, 24 kHz, STFT hop 10/24 ms, 0.04 s examples and hop
  -> one 96 x 64 patch per 25 fps video frame, 128-d per frame.

Timeline: the tail is padded with (window - hop) zero samples, so N samples give
floor(N / example samples) rows and row i covers [i, i + 1) example lengths.

Post-processing (option `embedding`): AudioSet's PCA/whitening, clip to [-2, 2], 8-bit
quantisation (values 0..255 kept as float32), as torchvggish applies by default
(`postprocess=True`) and so as the REACT baseline's audio features, on which REGNN is trained:
  auto           (default) post-process when PCA parameters come with the weights, else raw
  postprocessed  post-process; an error if no PCA parameters are found
  raw            the 128-d embedding layer output (a stream of its own, alias `<name>@raw`)
PCA parameters come with the weights: `default` -> torchvggish's published
`vggish_pca_params-970ea276.pth` in the torch hub cache (published beside the network);
a local file -> its `pproc.*` entries (a full torchvggish state dict) or that PCA file in the
same folder; `random` -> random parameters of the right shapes (seeded like the network).
`pca_params=PATH` names the file explicitly. The stream fingerprint records the choice and the
PCA parameters' identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from extract.encoders.base import AudioEncoder, EncoderSpec, Registration, alias_for, save_tensors
from extract.encoders.specs import VGGISH_EMBEDDING_SIZE as EMBEDDING_SIZE
from extract.encoders.specs import VGGISH_OPTIONS as _OPTIONS
from extract.encoders.specs import VGGISH_PCA_URL as PCA_URL
from extract.encoders.specs import VGGISH_REACT_SPEC as REACT_SPEC
from extract.encoders.specs import VGGISH_SPEC as SPEC
from extract.encoders.specs import VGGISH_WEIGHTS_URL as WEIGHTS_URL
from extract.encoders.specs import vggish_available as available
from extract.encoders.weights import (
    load_state_dict,
    load_strict,
    missing_default,
    resolve,
    seeded,
    torch_hub_checkpoint,
    weights_digest,
)
from features_store.errors import UserError

QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0

# Layer plan of the VGG trunk ("M" = 2x2 max pool); reduced divides the widths by 8.
FULL_PLAN: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
FULL_FC = 4096


@dataclass(frozen=True)
class LogMelConfig:
    """The original VGGish frontend parameters; times in seconds as in vggish_params.py."""

    sample_rate: int
    stft_window_s: float = 0.025
    stft_hop_s: float = 0.010
    n_mels: int = 64
    fmin_hz: float = 125.0
    fmax_hz: float = 7500.0
    log_offset: float = 0.01
    example_window_s: float = 0.96
    example_hop_s: float = 0.96

    @property
    def window_samples(self) -> int:
        return int(round(self.sample_rate * self.stft_window_s))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate * self.stft_hop_s))

    @property
    def fft_length(self) -> int:
        return 2 ** int(np.ceil(np.log2(self.window_samples)))

    @property
    def example_frames(self) -> int:
        return int(round(self.example_window_s / self.stft_hop_s))

    @property
    def example_hop_frames(self) -> int:
        return int(round(self.example_hop_s / self.stft_hop_s))


VGGISH_FRONTEND = LogMelConfig(sample_rate=16000)
REACT_FRONTEND = LogMelConfig(
    sample_rate=24000, stft_hop_s=0.010 / 24, example_window_s=0.04, example_hop_s=0.04
)


def mel_matrix(cfg: LogMelConfig) -> np.ndarray:
    """[fft_length // 2 + 1, n_mels] HTK-mel triangles, slopes computed in the mel domain."""

    def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)

    n_bins = cfg.fft_length // 2 + 1
    bins_mel = hz_to_mel(np.linspace(0.0, cfg.sample_rate / 2.0, n_bins))
    edges = np.linspace(hz_to_mel(cfg.fmin_hz), hz_to_mel(cfg.fmax_hz), cfg.n_mels + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin carries no band energy in the original
    return weights


class LogMelFrontend(nn.Module):
    """Waveform -> [examples, 1, frames, bands] log-mel patches, on any device."""

    def __init__(self, cfg: LogMelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.window_samples
        # periodic Hann, as mel_features.periodic_hann
        window = 0.5 - 0.5 * np.cos(2 * np.pi / n * np.arange(n))
        self.register_buffer("window", torch.tensor(window, dtype=torch.float32), persistent=False)
        self.register_buffer(
            "mel", torch.tensor(mel_matrix(cfg), dtype=torch.float32), persistent=False
        )

    @property
    def example_samples(self) -> int:
        return self.cfg.example_hop_frames * self.cfg.hop_samples

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """[samples] -> [frames, bands], unpadded framing as the original."""
        cfg = self.cfg
        frames = wav.unfold(0, cfg.window_samples, cfg.hop_samples)
        spectrum = torch.fft.rfft(frames * self.window, n=cfg.fft_length).abs()
        return torch.log(spectrum @ self.mel + cfg.log_offset)

    def examples(self, wav: torch.Tensor, first: int, count: int) -> torch.Tensor:
        """Examples first..first+count of the tail-padded waveform, [count, 1, frames, bands].

        Each example depends only on its own samples, so computing in blocks equals computing
        the whole clip at once while bounding memory."""
        cfg = self.cfg
        start = first * self.example_samples
        stop = (first + count - 1) * self.example_samples + (
            (cfg.example_frames - 1) * cfg.hop_samples + cfg.window_samples
        )
        piece = wav[start:stop]
        if len(piece) < stop - start:
            piece = torch.nn.functional.pad(piece, (0, stop - start - len(piece)))
        mel = self.log_mel(piece)
        patches = mel.unfold(0, cfg.example_frames, cfg.example_hop_frames)  # [n, bands, frames]
        return patches[:count].transpose(1, 2).unsqueeze(1)


class VGGishNetwork(nn.Module):
    """The VGGish network with torchvggish's module layout (and so its state-dict keys)."""

    def __init__(self, plan: tuple[int | str, ...] = FULL_PLAN, fc: int = FULL_FC) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for step in plan:
            if step == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(step), kernel_size=3, padding=1), nn.ReLU()]
                channels = int(step)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(channels * 4 * 6, fc),
            nn.ReLU(),
            nn.Linear(fc, fc),
            nn.ReLU(),
            nn.Linear(fc, EMBEDDING_SIZE),
            nn.ReLU(),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.features(patches)  # [N, C, 6, 4]
        # Flatten in TF's NHWC order (as torchvggish does), so the ported FC weights apply.
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return self.embeddings(x)


_PCA_KEYS = (
    ("pca_eigen_vectors", "pca_means"),  # torchvggish's vggish_pca_params .pth, TF's .npz
    ("pproc.pca_eigen_vectors", "pproc.pca_means"),  # a full torchvggish VGGish state dict
    ("pproc.pca_matrix", "pproc.pca_means"),
)
EMBEDDING_CHOICES = ("auto", "postprocessed", "raw")


def pca_from_state(state: dict[str, torch.Tensor],
                   path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(matrix [128, 128], means [128, 1]) from a state dict, None when it has none."""
    for matrix_key, means_key in _PCA_KEYS:
        if matrix_key in state and means_key in state:
            matrix = state[matrix_key].float()
            means = state[means_key].float().reshape(-1, 1)
            if matrix.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or len(means) != EMBEDDING_SIZE:
                raise UserError(f"{path}: PCA parameters have shapes {tuple(matrix.shape)}, "
                                f"{tuple(means.shape)}, expected (128, 128) and (128, 1)")
            return matrix, means
    return None


def load_pca(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """AudioSet PCA parameters from torchvggish's .pth, TF's .npz, or a VGGish state dict."""
    pca = pca_from_state(load_state_dict(path), path)
    if pca is None:
        raise UserError(f"{path}: no PCA parameters (pca_eigen_vectors and pca_means)")
    return pca


def random_pca(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random PCA parameters of the published shapes, for `--weights random` builds: an
    orthogonal matrix scaled to the whitened range and small means."""
    gen = torch.Generator().manual_seed(seed + 1)
    q, _ = torch.linalg.qr(torch.randn(EMBEDDING_SIZE, EMBEDDING_SIZE, generator=gen))
    return q * 4.0, 0.05 * torch.randn(EMBEDDING_SIZE, 1, generator=gen)


def pca_project(embeddings: torch.Tensor, matrix: torch.Tensor,
                means: torch.Tensor) -> torch.Tensor:
    """AudioSet PCA with whitening: matrix @ (embedding - means) per row, [N, 128]."""
    return (matrix @ (embeddings.T - means)).T


def quantize8(projected: torch.Tensor) -> torch.Tensor:
    """Clip to [-2, 2] and map to the 256 levels 0..255 (kept as float)."""
    clipped = projected.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
    return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


class VGGishEncoder(AudioEncoder):
    def __init__(
        self,
        network: VGGishNetwork,
        frontend: LogMelFrontend,
        pca: tuple[torch.Tensor, torch.Tensor] | None,
        batch_examples: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.network = network.eval()
        self.frontend = frontend
        self.pca = pca
        self.batch_examples = batch_examples

    def modules(self) -> list[nn.Module]:
        return [self.network, self.frontend]

    def to(self, device: str | torch.device) -> VGGishEncoder:
        super().to(device)
        if self.pca is not None:
            self.pca = (self.pca[0].to(self.device), self.pca[1].to(self.device))
        return self

    def hop_samples(self) -> int:
        return self.frontend.example_samples

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        n_rows = len(wav) // self.frontend.example_samples
        rows = []
        for first in range(0, n_rows, self.batch_examples):
            count = min(self.batch_examples, n_rows - first)
            # The log-mel runs in float32 even under the runner's fp16 autocast: the log of a
            # half-precision mel energy loses the quiet bands.
            with torch.autocast(wav.device.type, enabled=False):
                patches = self.frontend.examples(wav.float(), first, count)
            rows.append(self.network(patches))
        embeddings = torch.cat(rows)
        if self.pca is not None:
            embeddings = self.postprocess(embeddings)
        return embeddings

    def postprocess(self, embeddings: torch.Tensor) -> torch.Tensor:
        """PCA + whitening, clip to [-2, 2], quantise to 0..255 (kept as float)."""
        matrix, means = self.pca
        with torch.autocast(embeddings.device.type, enabled=False):
            return quantize8(pca_project(embeddings.float(), matrix, means))

    def save_weights(self, path: str | Path) -> Path:
        return save_tensors(self.network.state_dict(), path)


def _locate_default() -> tuple[Path, str]:
    path = torch_hub_checkpoint(Path(WEIGHTS_URL).name)
    if not path.is_file():
        raise missing_default("vggish", path.name, WEIGHTS_URL, path.parent)
    return path, str(path)


def _pca_path(pca_params: str) -> Path:
    if pca_params == "default":
        path = torch_hub_checkpoint(Path(PCA_URL).name)
        if not path.is_file():
            raise missing_default("vggish (pca_params)", path.name, PCA_URL, path.parent)
        return path
    path = Path(pca_params).expanduser()
    if not path.is_file():
        raise UserError(f"{pca_params}: PCA parameters file not found")
    return path


def _pca_for(choice: Any, state: dict[str, torch.Tensor] | None, pca_params: str | None,
             required: bool, published: bool,
             ) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, str | None]:
    """The PCA parameters that come with the weights, and their identity for the fingerprint."""
    if pca_params is not None:
        path = _pca_path(str(pca_params))
        return load_pca(path), weights_digest(path)
    if choice.path is None:  # random weights: random parameters through the same code
        return random_pca(choice.seed), f"random:{choice.seed}"
    if state is not None and (inside := pca_from_state(state, choice.path)) is not None:
        return inside, f"{choice.identity} (pproc)"
    folder = choice.path if choice.path.is_dir() else choice.path.parent
    beside = folder / Path(PCA_URL).name
    if beside.is_file():
        return load_pca(beside), weights_digest(beside)
    if required or published:
        # the published weights ship their PCA file (in the same hub cache): say where it goes
        raise missing_default("vggish (PCA parameters)", beside.name, PCA_URL, folder)
    return None, None


def _builder(frontend_cfg: LogMelConfig) -> Callable[..., VGGishEncoder]:
    def build(
        spec: EncoderSpec,
        weights: str,
        reduced: bool,
        pca_params: str | None,
        embedding: str,
        batch_examples: int,
    ) -> VGGishEncoder:
        if embedding not in EMBEDDING_CHOICES:
            raise UserError(f"{spec.name}: embedding={embedding!r}, choose one of "
                            f"{', '.join(EMBEDDING_CHOICES)}")
        choice = resolve(spec.name, weights, _locate_default)
        plan = tuple(s if s == "M" else int(s) // 8 for s in FULL_PLAN) if reduced else FULL_PLAN
        fc = FULL_FC // 16 if reduced else FULL_FC
        with seeded(choice.seed):
            network = VGGishNetwork(plan, fc)
        state = None
        if choice.path is not None:
            state = load_state_dict(choice.path)
            # torchvggish's full model also carries its postprocessor; that is not the network.
            network_state = {k: v for k, v in state.items() if not k.startswith("pproc.")}
            what = f"the VGGish network{' (reduced)' if reduced else ''} (torchvggish keys)"
            load_strict(network, network_state, choice.path, what)
        pca, pca_identity = None, None
        if embedding != "raw":
            pca, pca_identity = _pca_for(choice, state, pca_params,
                                         required=embedding == "postprocessed",
                                         published=str(weights) == "default")
        preprocessing = {
            **asdict(frontend_cfg),
            "window": "periodic-hann",
            "mel_scale": "htk (mel-domain triangles, DC zeroed)",
            "tail_pad_samples": frontend_cfg.window_samples - frontend_cfg.hop_samples,
            "postprocess": "pca+quantize8" if pca is not None else "raw",
            "pca_params": pca_identity,
        }
        return VGGishEncoder(
            network,
            LogMelFrontend(frontend_cfg),
            pca,
            int(batch_examples),
            spec=spec,
            # the post-processed stream is the encoder's own name (REACT reads `vggish-react`)
            alias=alias_for(spec.name, [] if pca is not None else ["raw"], choice.identity,
                            reduced),
            weights_source=choice.source,
            weights_identity=choice.identity,
            arch={"model": "vggish", "plan": list(plan), "fc": fc, "reduced": reduced},
            preprocessing=preprocessing,
            options={"embedding": "postprocessed" if pca is not None else "raw",
                     "pca_params": pca_identity},
        )

    return build


# The specs' rates are the frontends' (specs.py is torch-free, so it states them as numbers).
assert SPEC.sample_rate == VGGISH_FRONTEND.sample_rate
assert REACT_SPEC.sample_rate == REACT_FRONTEND.sample_rate

REGISTRATIONS = [
    Registration(SPEC, _OPTIONS, _builder(VGGISH_FRONTEND), available),
    Registration(REACT_SPEC, _OPTIONS, _builder(REACT_FRONTEND), available),
]
