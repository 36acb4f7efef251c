"""REGNN's appropriateness-aware loss.

For a speaker window b with K_b appropriate listener windows (K_b <= 10, padded to K with a
mask), the motor encodes every listener reaction into the cognitive space. The main term is

    min_k MSE(cognitive(b), motor(listener_{b,k}))

so the speaker only has to explain its *closest* appropriate reaction, which is what lets one
speaker map to a distribution of reactions. Per-sample minima at or below `threshold` count as
0 (already good enough; the paper sets the threshold to a third of the epoch's running average
at iteration 100 of each epoch). The "mid" term pulls each encoded reaction towards the mean of
its group, so a speaker's appropriate reactions share one region of the cognitive space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _frame_weights(
    frame_mask: torch.Tensor | None, shape: torch.Size, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """[B, 1, 1, F] weights over the frames of the window (1 = real frame)."""
    if frame_mask is None:
        return torch.ones(shape[0], 1, 1, shape[-1], device=device, dtype=dtype)
    return frame_mask.to(dtype)[:, None, None, :]


def pairwise_mse(
    prediction: torch.Tensor, encoded: torch.Tensor, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """prediction [B, N, F], encoded [B, K, N, F] -> [B, K] MSE over nodes and real frames."""
    weights = _frame_weights(frame_mask, prediction.shape, prediction.device, prediction.dtype)
    squared = (encoded - prediction[:, None]) ** 2 * weights
    n_real = (weights.sum(dim=(2, 3)) * prediction.shape[1]).clamp_min(1.0)
    return squared.sum(dim=(2, 3)) / n_real


def appropriate_min_mse(
    prediction: torch.Tensor,
    encoded: torch.Tensor,
    listener_mask: torch.Tensor,
    threshold: float | None = None,
    frame_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-over-appropriate-listeners MSE.

    Returns (loss, per-sample minimum [B], index of the chosen listener [B]). Samples without
    any appropriate listener are left out of the mean (their minimum is reported as NaN).
    """
    mse = pairwise_mse(prediction, encoded, frame_mask)
    valid = listener_mask.bool()
    minimum, chosen = mse.masked_fill(~valid, float("inf")).min(dim=1)
    has_listener = valid.any(dim=1)
    kept = torch.where(has_listener, minimum, torch.zeros_like(minimum))
    if threshold is not None:
        kept = torch.where(kept > threshold, kept, torch.zeros_like(kept))
    # a batch with no appropriate listener at all still returns a differentiable zero
    loss = kept.sum() / has_listener.sum().clamp_min(1)
    reported = torch.where(has_listener, minimum, torch.full_like(minimum, float("nan")))
    return loss, reported.detach(), chosen


def mid_loss(
    encoded: torch.Tensor, listener_mask: torch.Tensor, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MSE between each valid encoded reaction [B, K, N, F] and its group's mean."""
    valid = listener_mask.to(encoded.dtype)[:, :, None, None]  # [B, K, 1, 1]
    group_size = valid.sum(dim=1, keepdim=True).clamp_min(1.0)
    group_mean = (encoded * valid).sum(dim=1, keepdim=True) / group_size
    weights = valid * _frame_weights(frame_mask, encoded.shape, encoded.device, encoded.dtype)
    squared = (encoded - group_mean) ** 2 * weights
    n_real = (weights.sum() * encoded.shape[2]).clamp_min(1.0)
    return squared.sum() / n_real


@dataclass
class ThresholdSchedule:
    """The min-MSE threshold as training state: the trainer calls `observe` after every step.

    At iteration `at_iteration` of each epoch the threshold becomes the epoch's running average
    of the (thresholded) min-MSE loss divided by `divisor`, and it stays until the next epoch
    sets it again. An epoch shorter than `at_iteration` sets it in `end_epoch` instead (the
    paper's loop would never set it on such a small data set).
    """

    divisor: float = 3.0
    at_iteration: int = 100
    threshold: float | None = None
    _sum: float = 0.0
    _count: int = 0
    _set_this_epoch: bool = False

    def start_epoch(self) -> None:
        self._sum, self._count, self._set_this_epoch = 0.0, 0, False

    def observe(self, min_mse_loss: float) -> None:
        self._sum += float(min_mse_loss)
        self._count += 1
        if self._count == self.at_iteration:
            self._set()

    def end_epoch(self) -> None:
        if not self._set_this_epoch and self._count:
            self._set()

    def _set(self) -> None:
        self.threshold = self._sum / self._count / self.divisor
        self._set_this_epoch = True

    def state_dict(self) -> dict[str, float | None]:
        return {"threshold": self.threshold}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.threshold = state.get("threshold")
