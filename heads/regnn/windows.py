"""Cut a clip into overlapping windows and put window predictions back together.

REGNN works on 50-frame windows taken every 25 frames: a 750-frame clip gives 29 windows. After
generation the windows are recombined by overlap-add: each frame is the mean of the windows that
cover it, so with stride = window / 2 the first and last `stride` frames come from one window
and every other frame is the average of two (the paper's `combine_preds`).

Lengths: a length L is *valid* when L >= window and (L - window) % stride == 0, so the windows
tile the clip exactly. Any other length is padded at the end (by repeating its last frame, so the
padded frames look like the clip and not like silence) to the next valid length, split, and after
recombination the result is cut back to L.
"""

from __future__ import annotations

import torch


def valid_length(length: int, window: int, stride: int) -> int:
    """Smallest valid length >= `length` (see the module docstring)."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if length <= window:
        return window
    extra = (length - window) % stride
    return length if extra == 0 else length + stride - extra


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start frames of the windows of a clip of `length` frames (after padding)."""
    padded = valid_length(length, window, stride)
    return list(range(0, padded - window + 1, stride))


def split_windows(sequence: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """[L, D] -> [n_windows, window, D]; pads an invalid L by repeating the last frame."""
    if sequence.dim() != 2:
        raise ValueError(f"expected a [L, D] sequence, got shape {tuple(sequence.shape)}")
    length = sequence.shape[0]
    padded = valid_length(length, window, stride)
    if padded > length:
        tail = sequence[-1:].expand(padded - length, -1)
        sequence = torch.cat([sequence, tail], dim=0)
    # unfold gives [n, D, window]; views, no copy until the transpose is materialised
    return sequence.unfold(0, window, stride).transpose(1, 2).contiguous()


def overlap_add(windows: torch.Tensor, stride: int, length: int | None = None) -> torch.Tensor:
    """[..., n_windows, window, D] -> [..., L, D], each frame the mean of the windows covering it.

    `length` cuts the result (the clip's length before padding); by default the full
    (n_windows - 1) * stride + window frames are returned.
    """
    if windows.dim() < 3:
        raise ValueError(f"expected [..., n, window, D] windows, got {tuple(windows.shape)}")
    n_windows, window, dim = windows.shape[-3:]
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} leaves frames uncovered")
    lead = windows.shape[:-3]
    total = (n_windows - 1) * stride + window
    flat = windows.reshape(-1, n_windows, window, dim)
    # fold sums the overlapping windows; it wants [B, C * kernel, n_blocks] with C = D
    columns = flat.permute(0, 3, 2, 1).reshape(flat.shape[0], dim * window, n_windows)
    summed = torch.nn.functional.fold(
        columns, output_size=(1, total), kernel_size=(1, window), stride=(1, stride)
    ).reshape(flat.shape[0], dim, total)
    ones = torch.ones(1, window, n_windows, dtype=windows.dtype, device=windows.device)
    counts = torch.nn.functional.fold(
        ones, output_size=(1, total), kernel_size=(1, window), stride=(1, stride)
    ).reshape(1, 1, total)
    merged = (summed / counts).transpose(1, 2).reshape(*lead, total, dim)
    if length is not None:
        if length > total:
            raise ValueError(f"length {length} is longer than the {total} frames covered")
        merged = merged[..., :length, :]
    return merged
