"""Stream keys: a stable hash of everything that determines a stream's values.

Same key means the values would come out the same, so a clip committed under that key is done and
is skipped on a rerun; any change (weights, preprocessing, layer, code version) gives a new key and
a new stream beside the old one, in the manner of Hugging Face datasets' fingerprints.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def _same_number_same_text(obj: Any) -> Any:
    # 25 and 25.0 are one frame rate: JSON writes them differently, so an integral float is
    # hashed as its integer (a clips file's `"fps": 25` and the CLI's 25.0 give one stream).
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    if isinstance(obj, dict):
        return {k: _same_number_same_text(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_same_number_same_text(v) for v in obj]
    return obj


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal content hashes equally."""
    return json.dumps(_same_number_same_text(obj), sort_keys=True, separators=(",", ":"),
                      default=str)


def fingerprint(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def file_sha256(path: str, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(block_size):
            digest.update(block)
    return digest.hexdigest()
