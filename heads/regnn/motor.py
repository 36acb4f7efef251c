"""Motor processor: a reversible graph network between reactions and cognitive codes.

Each layer is ActNorm over the 25 nodes followed by a residual map y = x + f(x) in which f is
graph message passing over the cognitive processor's edges:

    s = sigmoid(ELU(x))                               node features squashed into (0, 1)
    A = softmax(q(s) k(s)^T / sqrt(F))                 one attention graph over the nodes
    G = sum_p w_p rownorm(A * edge_p)                  mixed with the P edge channels
    f(x) = G s / lipnorm,  lipnorm = ||I + 2 Wq^T Wk / sqrt(F)||_2 + 5

G is row-stochastic and s is 1/4-Lipschitz, and the division by lipnorm (a constant in the
backward pass, like a spectral norm) keeps f a contraction (Lipschitz < 1). Then y = x + f(x) is
invertible and x is found by the fixed-point iteration x <- y - f(x) (i-ResNet, Behrmann et al.
2019). log|det dy/dx| can be estimated by the power series of log(I + J_f) with a Hutchinson
trace estimator; it is off by default, as in the paper's training.

The released code's behaviour is the default (the `paper` profile); `profile=fixed` corrects:
- channel weights: w = softmax(logits) instead of w / sum(w) with free w, which leaves the
  simplex (and breaks the row-stochastic bound) as soon as one weight turns negative
  (`channel_weights`);
- lipnorm uses Wq^T Wk, the matrix of the bilinear form q . k for torch's [out, in] weight
  layout (the released code multiplies the stored weights as Wq Wk^T: `lipnorm_form`);
- ActNorm's initial std has a floor (`actnorm_min_std`), so a node constant in the first batch
  does not get a scale of ~316;
- the inverse iterates past its 5 steps while the residual is above tolerance, up to a cap
  (`inverse_rule`); in both profiles it warns instead of asserting when it has not converged;
- the log-det (when used) is each sample's sum over the layers, where the released code sums
  the series over the batch, counts ActNorm's log-det once per batch and averages over the
  layers (`logdet_reduction`, applied in heads.regnn.model with the sign `logdet_sign`).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn import functional as F

from heads.regnn.config import RegnnConfig


class ActNorm(nn.Module):
    """Per-node affine normalisation of [B, N, F], initialised from the first training batch."""

    def __init__(self, channels: int, eps: float = 1e-5, min_std: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        # a node that is constant in the first batch (a rare AU) would get a huge scale; the
        # released code has no floor (min_std 0)
        self.min_std = min_std
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2))
        std = (x.var(dim=(0, 2), unbiased=False) + self.eps).sqrt().clamp_min(self.min_std)
        self.log_scale.copy_(-std.log())
        self.shift.copy_(-mean / std)
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.initialized) and x.shape[0] > 0:
            self.initialize(x)
        y = x * self.log_scale.exp()[:, None] + self.shift[:, None]
        return y, self.log_scale.sum() * x.shape[2]  # the same for every sample

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.shift[:, None]) * (-self.log_scale).exp()[:, None]


class LipschitzGraphResidual(nn.Module):
    """The contraction f of one reversible layer (see the module docstring)."""

    def __init__(self, node_features: int, edge_channels: int, lipschitz_offset: float,
                 lipnorm_form: str = "bilinear", channel_weights: str = "softmax") -> None:
        super().__init__()
        self.node_features = node_features
        self.scale = node_features**-0.5
        self.lipschitz_offset = lipschitz_offset
        self.lipnorm_form = lipnorm_form
        self.channel_weights = channel_weights
        self.query_key = nn.Linear(node_features, 2 * node_features)
        # softmax(zeros) and ones / sum(ones) both start from equal channel weights
        init = torch.zeros if channel_weights == "softmax" else torch.ones
        self.channel_logits = nn.Parameter(init(edge_channels))

    def channel_mix(self) -> torch.Tensor:
        """The edge channels' mixing weights."""
        if self.channel_weights == "softmax":
            return torch.softmax(self.channel_logits, dim=0)
        return self.channel_logits / self.channel_logits.sum()

    def lipnorm(self) -> torch.Tensor:
        with torch.no_grad():
            weight_q, weight_k = self.query_key.weight.split(self.node_features, dim=0)
            eye = torch.eye(self.node_features, dtype=weight_q.dtype, device=weight_q.device)
            product = (weight_q.T @ weight_k if self.lipnorm_form == "bilinear"
                       else weight_q @ weight_k.T)
            bilinear = eye + 2.0 * self.scale * product
            return torch.linalg.matrix_norm(bilinear, ord=2) + self.lipschitz_offset

    def forward(
        self, x: torch.Tensor, edge: torch.Tensor, lipnorm: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [B, N, F], edge [B, P, N, N] -> f(x) [B, N, F]."""
        squashed = torch.sigmoid(F.elu(x))
        query, key = self.query_key(squashed).chunk(2, dim=-1)
        attention = torch.softmax(query @ key.transpose(-1, -2) * self.scale, dim=-1)
        weighted = attention.unsqueeze(1) * edge
        weighted = weighted / weighted.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        graph = torch.einsum("bpij,p->bij", weighted, self.channel_mix())
        if lipnorm is None:
            lipnorm = self.lipnorm()
        return graph @ squashed / lipnorm


def power_series_logdet(
    fx: torch.Tensor, x: torch.Tensor, terms: int, samples: int, generator=None
) -> torch.Tensor:
    """Per-sample estimate of log det(I + df/dx) = sum_k (-1)^(k+1) tr(J^k) / k.

    tr(J^k) ~ v^T J^k v with v ~ N(0, I) (Hutchinson); J^k v is built from k vector-Jacobian
    products. Needs x to require grad and fx to be computed from it under autograd.
    """
    create_graph = torch.is_grad_enabled()
    batch_dims = tuple(range(1, x.dim()))
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(samples):
        probe = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        vector = probe
        for k in range(1, terms + 1):
            (vector,) = torch.autograd.grad(
                fx, x, grad_outputs=vector, create_graph=create_graph, retain_graph=True
            )
            sign = 1.0 if k % 2 else -1.0
            total = total + sign / k * (vector * probe).sum(dim=batch_dims)
    return total / samples


class ReversibleGraphLayer(nn.Module):
    """ActNorm (optional) then y = x + f(x); `inverse` undoes both."""

    def __init__(self, config: RegnnConfig) -> None:
        super().__init__()
        self.config = config
        self.actnorm = (ActNorm(config.out_dim, min_std=config.actnorm_min_std)
                        if config.motor_actnorm else None)
        self.residual = LipschitzGraphResidual(
            config.window, config.edge_channels, config.lipschitz_offset,
            config.lipnorm_form, config.channel_weights,
        )

    def forward(
        self, x: torch.Tensor, edge: torch.Tensor, with_logdet: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """y, and with `with_logdet` the log-det in two parts: ActNorm's (a scalar, the same for
        every sample) and the residual's power-series estimate per sample [B]."""
        actnorm_logdet = x.new_zeros(())
        if self.actnorm is not None:
            x, actnorm_logdet = self.actnorm(x)
        if not with_logdet:
            return x + self.residual(x, edge), None
        with torch.enable_grad():
            # the estimator differentiates f with respect to its input, which may be plain data
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            fx = self.residual(x_in, edge)
            series = power_series_logdet(
                fx, x_in, self.config.logdet_terms, self.config.logdet_samples
            )
        if not torch.is_grad_enabled():
            fx, series = fx.detach(), series.detach()
        return x + fx, (actnorm_logdet, series)

    @torch.no_grad()
    def inverse(self, y: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
        config = self.config
        lipnorm = self.residual.lipnorm()
        # released: stop at the first converged step, never past inverse_steps; converge: at
        # least inverse_steps, then on while not converged, up to inverse_max_steps
        released = config.inverse_rule == "released"
        min_steps = 1 if released else config.inverse_steps
        max_steps = (config.inverse_steps if released
                     else max(config.inverse_steps, config.inverse_max_steps))
        x = y
        residual = float("inf")
        steps = 0
        while steps < max_steps:
            update = y - self.residual(x, edge, lipnorm)
            # |update - x| = |y - (x + f(x))|: the residual of the current estimate
            residual = float((update - x).abs().max())
            x = update
            steps += 1
            if steps >= min_steps and residual <= config.inverse_tol:
                break
        if residual > config.inverse_tol:
            warnings.warn(
                f"REGNN motor inverse stopped after {steps} steps with residual {residual:.2e} "
                f"> {config.inverse_tol:.0e}; the layer may not be a contraction",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.actnorm is not None:
            x = self.actnorm.inverse(x)
        return x


class MotorProcessor(nn.Module):
    """Reactions as nodes [B, N, F] <-> cognitive codes [B, N, F], conditioned on the edges."""

    def __init__(self, config: RegnnConfig) -> None:
        super().__init__()
        self.logdet_reduction = config.logdet_reduction
        self.layers = nn.ModuleList(
            ReversibleGraphLayer(config) for _ in range(config.motor_layers)
        )

    def forward(
        self, x: torch.Tensor, edge: torch.Tensor, with_logdet: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """codes, and with `with_logdet` the log-det: per sample [B] (the sum over the layers)
        with logdet_reduction "per-element", or the released code's scalar with "released"
        (per layer ActNorm's log-det once plus the series summed over the batch, averaged over
        the layers: `LipschitzGraph.forward` and `GraphLayer.forward`)."""
        parts = []
        for layer in self.layers:
            x, logdet = layer(x, edge, with_logdet)
            if logdet is not None:
                parts.append(logdet)
        if not parts:
            return x, None
        if self.logdet_reduction == "released":
            return x, sum(actnorm + series.sum() for actnorm, series in parts) / len(parts)
        return x, sum(actnorm + series for actnorm, series in parts)

    @torch.no_grad()
    def inverse(self, y: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y, edge)
        return y
