"""Released checkpoints of the papers, loaded into our modules (`affect import-run`).

A user holding a paper's released weights runs them on cached features: the file is read as
tensors only (safetensors, or `torch.load(weights_only=True)`: nothing in it is executed), each
head maps the released names onto its own (`Head.import_official`), and the mapping is strict:
every released key is used or named as ignored with a reason, every shape is checked, and the
first key that does not fit is named in one line. The result is a run folder in the paper
profile, which `evaluate`, `predict` and `report` open like any other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from features_store.errors import UserError

# Containers the released scripts wrap their weights in (torch.save({"state_dict": ...}) etc.).
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")


def read_official_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released checkpoint, flattened to "a.b.c" names (no code runs)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: no such checkpoint file")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(file)))
        except Exception as error:  # a damaged or foreign file: one line, not a traceback
            raise UserError(f"{file}: not a readable safetensors file ({error})") from None
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            reason = "it holds Python objects besides tensors, which affect never unpickles"
        raise UserError(f"{file}: cannot be read as tensors ({reason}); save its state_dict "
                        "with torch.save(model.state_dict(), ...) or as safetensors") from None
    return _flatten(_unwrap(raw), "")


def _unwrap(raw: Any) -> Any:
    """The state dict inside the wrappers released scripts use (one level of nesting)."""
    if isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        for name in _WRAPPERS:
            if isinstance(raw.get(name), Mapping):
                return raw[name]
    return raw


def _flatten(raw: Any, prefix: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(raw, torch.Tensor):
        out[prefix.rstrip(".")] = raw
    elif isinstance(raw, Mapping):
        for key, value in raw.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    return out  # numbers, strings (an epoch count, args) are not weights


def strip_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """`tensors` with `prefix` removed from every key that has it (DataParallel's "module.")."""
    if tensors and all(k.startswith(prefix) for k in tensors):
        return {k[len(prefix):]: v for k, v in tensors.items()}
    return dict(tensors)


class OfficialState:
    """A released state dict being mapped onto our model's keys, with strict bookkeeping."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], target: nn.Module,
                 source: str) -> None:
        self.tensors = strip_prefix(tensors, "module.")
        self.source = source
        self.target = {k: v for k, v in target.state_dict().items()}
        self.state: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()
        self.ignored: dict[str, str] = {}

    def keys(self) -> list[str]:
        return list(self.tensors)

    def has(self, theirs: str) -> bool:
        return theirs in self.tensors

    def get(self, theirs: str) -> torch.Tensor:
        """A released tensor by name (marks it used)."""
        if theirs not in self.tensors:
            raise UserError(f"{self.source}: has no key {theirs!r} (not a checkpoint of this "
                            f"head's released model?)")
        self.used.add(theirs)
        return self.tensors[theirs]

    def copy(self, ours: str, theirs: str,
             transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Our `ours` <- their `theirs` (optionally transformed), shape checked."""
        value = self.get(theirs)
        self.put(ours, transform(value) if transform is not None else value, theirs)

    def put(self, ours: str, value: torch.Tensor, theirs: str = "") -> None:
        """Our `ours` <- a tensor computed from released ones (`theirs` names them in errors)."""
        if ours not in self.target:
            raise UserError(f"{self.source}: {theirs or 'a released tensor'} maps to {ours!r}, "
                            "which our model does not have")
        want = tuple(self.target[ours].shape)
        if tuple(value.shape) != want:
            raise UserError(f"{self.source}: {theirs or ours} has shape {tuple(value.shape)}, "
                            f"our {ours} needs {want} (built with other sizes: pass the "
                            "released config with --set)")
        self.state[ours] = value.detach().to(self.target[ours].dtype).clone()

    def copy_prefix(self, ours: str, theirs: str) -> None:
        """Every one of our keys under `ours` <- the same name under their `theirs`."""
        names = [k for k in self.target if k.startswith(ours)]
        if not names:
            raise UserError(f"{self.source}: our model has no keys under {ours!r}")
        for name in names:
            self.copy(name, theirs + name[len(ours):])

    def ignore(self, theirs: str, reason: str) -> None:
        """Their key (or every key under a prefix ending in ".") is not used, for `reason`."""
        names = [k for k in self.tensors if k == theirs or
                 (theirs.endswith(".") and k.startswith(theirs))]
        for name in names:
            self.ignored[name] = reason

    def keep_ours(self, ours: str, reason: str) -> None:
        """Our key has no released counterpart and keeps its built value (a buffer computed
        from the config, such as a position table), for `reason`."""
        for name in [k for k in self.target if k == ours or
                     (ours.endswith(".") and k.startswith(ours))]:
            self.state[name] = self.target[name].clone()
            self.ignored[f"(ours) {name}"] = reason

    def finish(self) -> dict[str, torch.Tensor]:
        """Our full state dict; UserError naming the first released key left unused or our first
        key left unfilled."""
        unused = [k for k in self.tensors if k not in self.used and k not in self.ignored]
        if unused:
            raise UserError(f"{self.source}: released key {unused[0]!r} is not used by the "
                            f"mapping ({len(unused)} unused in all)")
        missing = [k for k in self.target if k not in self.state]
        if missing:
            raise UserError(f"{self.source}: nothing in the released file gives our "
                            f"{missing[0]!r} ({len(missing)} missing in all)")
        return self.state


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
