"""Released ABAW 2022 checkpoints (situAI/ABAW2022_VA_Situ-RUCAIM3) mapped onto our modules.

The released train.py saves one file per sub-network, `<epoch>_net<name>.pth` (BaseModel.
save_networks: `_fc`, `_te`, `_lstm`, `_reg`, ... as the model's `model_names`), and test.py
loads the files of one epoch prefix. `affect import-run --from-official` takes any one of those
files and reads its siblings of the same prefix, or a single file holding every sub-network's
state dict under its name (`{"net_fc": ..., "net_te": ...}`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from heads.official import OfficialState, read_official_file

# The released model_names of each member (the sub-networks whose files make a checkpoint).
SUB_NETWORKS: dict[str, tuple[str, ...]] = {
    "transformer": ("_seq", "_reg"),
    "transformer-lstm": ("_fc", "_te", "_lstm", "_reg"),
    "transformer-attention": ("_seq", "_reg", "_attn"),
    "fclstm-xl": ("_fc", "_seq", "_reg"),
}

_PER_NETWORK_FILE = re.compile(r"^(?P<prefix>.+)_net(?P<name>_[A-Za-z0-9]+)\.pth$")

# The released TransformerEncoder's extras that the per-frame members never call.
_UNUSED_ENCODER = {
    "position_embeddings.weight": "the released fixed sinusoid table (frozen nn.Embedding); "
                                  "ours is built from the config (position_zero_row)",
    "linear.": "the released encoder's pooled-embedding head (max-pool, Linear, tanh), whose "
               "output the per-frame models never use",
}


def read_released(member: str, path: str | Path) -> dict[str, torch.Tensor]:
    """Every sub-network's tensors as "net<name>.<key>": from the sibling files of the released
    per-network layout, or from one file that holds them all."""
    file = Path(path)
    match = _PER_NETWORK_FILE.match(file.name)
    if match is None or match["name"] not in SUB_NETWORKS[member]:
        return read_official_file(file)
    tensors: dict[str, torch.Tensor] = {}
    for name in SUB_NETWORKS[member]:
        # a sibling in the same folder, named by the released convention
        sibling = file.with_name(f"{match['prefix']}_net{name}.pth")
        for key, value in read_official_file(sibling).items():
            tensors[f"net{name}.{key}"] = value
    return tensors


def _copy_regressor(official: OfficialState, model: nn.Module, theirs: str,
                    dropout: float) -> None:
    """Our regressor Sequential <- the released FcRegressor: its hidden Linears sit in
    `module` every 3 entries (Linear, ReLU, Dropout; every 2 when dropout is 0), the last
    Linear is `fc_out`."""
    ours = [i for i, layer in enumerate(model.head) if isinstance(layer, nn.Linear)]
    stride = 3 if dropout > 0 else 2
    for k, index in enumerate(ours[:-1]):
        official.copy_prefix(f"head.{index}.", f"{theirs}.module.{k * stride}.")
    official.copy_prefix(f"head.{ours[-1]}.", f"{theirs}.fc_out.")


def _ignore_encoder_extras(official: OfficialState, theirs: str) -> None:
    for key, reason in _UNUSED_ENCODER.items():
        official.ignore(f"{theirs}.{key}", reason)


def import_released(member: str, official: OfficialState, model: nn.Module,
                    regressor_dropout: float) -> None:
    """Map the released tensors of `member` onto `model` (our keys <- theirs)."""
    if member == "transformer-lstm":
        official.copy_prefix("project.0.", "net_fc.module.0.")
        official.copy_prefix("encoder.", "net_te.encoder.")
        _ignore_encoder_extras(official, "net_te")
        official.copy_prefix("lstm.", "net_lstm.rnn.")
    elif member in ("transformer", "transformer-attention"):
        official.copy_prefix("project.", "net_seq.affine.")
        official.copy_prefix("encoder.", "net_seq.encoder.")
        _ignore_encoder_extras(official, "net_seq")
        if member == "transformer-attention":
            official.copy_prefix("attention.", "net_attn.")
    elif member == "fclstm-xl":
        official.copy_prefix("project.0.", "net_fc.module.0.")
        official.copy_prefix("lstm.", "net_seq.rnn.")
    _copy_regressor(official, model, "net_reg", regressor_dropout)
