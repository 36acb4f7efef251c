"""Where weights come from, without network: `random`, a local path, or the library's own cache.

Cache locations are read from the environment at call time (HF_HUB_CACHE / HF_HOME /
XDG_CACHE_HOME, TORCH_HOME, HOME), not from constants frozen at import, so a caller (or a test)
can point them elsewhere. Nothing here downloads; a missing default is a one-line UserError
saying what to fetch, from where, and where to put it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# The cache locations are torch-free (specs.py, for listings); re-exported for the families.
from extract.encoders.specs import hf_cached_file as hf_cached_file
from extract.encoders.specs import hf_cached_snapshot as hf_cached_snapshot
from extract.encoders.specs import hf_hub_cache as hf_hub_cache
from extract.encoders.specs import torch_hub_checkpoint as torch_hub_checkpoint
from features_store.errors import UserError

RANDOM = "random"
DEFAULT = "default"
MAX_SEED = 2**32 - 1  # what every random generator a build seeds accepts
# A model folder holds a handful of files (weights, config, tokenizer); a folder with more is
# not one (`--weights /usr`), and hashing it whole would take as long as reading the disk.
MAX_WEIGHTS_FILES = 500


def one_line(text: object) -> str:
    """First line of an error text, whitespace collapsed: UserError messages are one line."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return re.sub(r"\s+", " ", lines[0]) if lines else type(text).__name__


@dataclass(frozen=True)
class Weights:
    """A resolved weights choice: `path` is None for random weights."""

    path: Path | None
    source: str  # "random", the file/folder path, or the hub id
    identity: str  # "random:<seed>" or "sha256:<hex>"
    seed: int = 0

    @property
    def is_random(self) -> bool:
        return self.path is None


def resolve(name: str, weights: str, locate_default: Callable[[], tuple[Path, str]]) -> Weights:
    """Turn the user's `weights` argument into a local path (or random), checking nothing remote.

    `locate_default` returns (local path, source label) from the library cache or raises
    UserError naming what to download.
    """
    weights = str(weights)
    if weights == RANDOM or weights.startswith(RANDOM + ":"):
        seed_text = weights.partition(":")[2] or "0"
        if not (seed_text.isascii() and seed_text.isdigit()) or int(seed_text) > MAX_SEED:
            raise UserError(f"--weights {weights[:60]}: the seed after 'random:' must be an "
                            f"integer in 0..{MAX_SEED}")
        seed = int(seed_text)
        return Weights(path=None, source=RANDOM, identity=f"random:{seed}", seed=seed)
    if weights == DEFAULT:
        path, source = locate_default()
    else:
        path, source = Path(weights).expanduser(), weights
        if not path.exists():
            raise UserError(
                f"{weights}: weights for encoder {name} not found "
                "(give an existing file or folder, 'default' or 'random')"
            )
    return Weights(path=path, source=source, identity=weights_digest(path))


def missing_default(name: str, what: str, url: str, where: Path | str) -> UserError:
    return UserError(
        f"encoder {name}: default weights ({what}) not in the local cache {where}; "
        f"download {url} there (this tool never downloads), or pass --weights PATH"
    )


# ---- identity --------------------------------------------------------------------------------

_SHA256_BY_STAT: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so a process hashes a file once."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_BY_STAT:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _SHA256_BY_STAT[key] = digest.hexdigest()
    return _SHA256_BY_STAT[key]


# Files in a model folder that never change the torch model's values (docs, other frameworks'
# exports): a README edit or an extra ONNX download must not start a new stream.
_INERT_SUFFIXES = (".md", ".h5", ".msgpack", ".ot", ".onnx", ".onnx_data", ".gguf", ".tflite")
_INERT_DIRS = {"onnx", "openvino"}


def weights_digest(path: Path) -> str:
    """`sha256:<hex>` of a weights file, or of a folder (relative names and file digests)."""
    path = Path(path)
    if path.is_file():
        return "sha256:" + file_sha256(path)
    lines = []
    items = []
    for root, folders, names in os.walk(path):
        # Hidden folders (.git, .cache) and other frameworks' exports are pruned, not walked.
        folders[:] = [f for f in folders if not f.startswith(".") and f not in _INERT_DIRS]
        items.extend(Path(root, n) for n in names if not n.startswith("."))
        if len(items) > MAX_WEIGHTS_FILES:
            raise UserError(f"{path}: not a model folder (more than {MAX_WEIGHTS_FILES} files); "
                            "pass the model's own weights file or folder")
    for item in sorted(items):
        relative = item.relative_to(path)
        # Only regular files: a FIFO or device in the folder would block the digest.
        if not item.is_file() or item.name.endswith(_INERT_SUFFIXES):
            continue
        lines.append(f"{relative.as_posix()} {file_sha256(item)}")
    if not lines:
        raise UserError(f"{path}: weights folder is empty")
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


# ---- safe loading ----------------------------------------------------------------------------

PICKLE_HINT = (
    "it holds pickled Python objects, which we never unpickle; "
    "save model.state_dict() with torch.save or safetensors and pass that file"
)


def load_state_dict(path: Path, *, pickled_hint: str = PICKLE_HINT) -> dict[str, torch.Tensor]:
    """Read tensors from .safetensors, .npz or a torch file, never running pickled code.

    Unwraps the usual checkpoint nesting ("state_dict", "model") and a DataParallel "module."
    prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: expected a weights file, found a folder or nothing")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: object = load_file(str(path))
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                loaded = {key: torch.from_numpy(archive[key]) for key in archive.files}
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(f"{path}: not a plain state dict: {pickled_hint}") from error
    except Exception as error:  # corrupt or foreign files surface as many exception types
        raise UserError(f"{path}: cannot read weights ({one_line(error)})") from error
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected a state dict (name -> tensor), found {type(loaded)}")
    state = {}
    for key, value in loaded.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key.removeprefix("module.")] = value
    return state


def load_strict(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    path: Path,
    what: str,
    may_miss: Callable[[str], bool] = lambda key: False,
) -> None:
    """load_state_dict that turns a mismatch into a one-line UserError naming the file."""
    expected = set(module.state_dict())
    missing = sorted(key for key in expected - set(state) if not may_miss(key))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} keys e.g. {missing[0]!r}")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys e.g. {unexpected[0]!r}")
        raise UserError(f"{path}: weights do not fit {what} ({'; '.join(detail)})")
    try:
        # Key sets were checked above; strict=False lets allowed-missing keys (heads) be.
        module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise UserError(f"{path}: weights do not fit {what} ({one_line(error)})") from error


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a random build and restore the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
