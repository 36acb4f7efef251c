"""REGNN (Xu et al., REACT 2023): reversible graph networks for multiple appropriate reactions.

    speaker video + audio window --perceptual--> [B, 50, 64]
        --cognitive--> nodes [B, 25, 50] (the predicted reaction code) + edges [B, 8, 25, 25]
    listener reaction window [50, 25] --motor (reversible, conditioned on the edges)--> [25, 50]

Training pulls the speaker's cognitive code towards the motor encoding of its closest
appropriate listener reaction (heads.regnn.loss). Generation perturbs the code with small noise
and runs the motor backwards, so every noise draw decodes to a different appropriate reaction.
"""

from __future__ import annotations

import torch
from torch import nn

from heads.regnn.cognitive import CognitiveProcessor
from heads.regnn.config import RegnnConfig
from heads.regnn.loss import appropriate_min_mse, mid_loss
from heads.regnn.motor import MotorProcessor
from heads.regnn.perceptual import PerceptualProcessor
from heads.regnn.windows import overlap_add, split_windows


class Regnn(nn.Module):
    def __init__(self, config: RegnnConfig | None = None) -> None:
        super().__init__()
        self.config = config or RegnnConfig()
        self.config.validate()
        self.perceptual = PerceptualProcessor(self.config)
        self.cognitive = CognitiveProcessor(self.config)
        self.motor = MotorProcessor(self.config)

    def encode_speaker(
        self, video: torch.Tensor, audio: torch.Tensor, frame_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, T, Dv], audio [B, T, Da] -> cognitive nodes [B, N, T], edges [B, P, N, N]."""
        return self.cognitive(self.perceptual(video, audio, frame_mask))

    def encode_listeners(
        self, listeners: torch.Tensor, listener_mask: torch.Tensor, edge: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """listeners [B, K, T, N] -> motor codes [B, K, N, T] (zeros where the mask is off).

        Only the real listeners go through the motor, so padding neither costs time nor enters
        the ActNorm initialisation. Returns the codes and the log-det (None when not computed;
        per listener, or the released scalar: MotorProcessor.forward).
        """
        batch, k_max, n_frames, n_nodes = listeners.shape
        valid = listener_mask.bool().reshape(-1)
        reactions = listeners.transpose(-1, -2).reshape(batch * k_max, n_nodes, n_frames)
        edges = edge.repeat_interleave(k_max, dim=0)
        codes, logdet = self.motor(reactions[valid], edges[valid], self.config.logdet)
        encoded = codes.new_zeros(reactions.shape).index_put((valid.nonzero()[:, 0],), codes)
        return encoded.reshape(batch, k_max, *codes.shape[1:]), logdet

    def forward_train(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        listeners: torch.Tensor,
        listener_mask: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
        threshold: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """One training batch of speaker windows and their appropriate listener windows.

        video [B, T, Dv], audio [B, T, Da], listeners [B, K, T, N] (K <= max_listeners, padded),
        listener_mask [B, K] True on real listeners, frame_mask [B, T] True on real frames.
        `threshold` is the min-MSE threshold, training state the trainer keeps
        (heads.regnn.loss.ThresholdSchedule; None before it is first set).
        Returns {"loss": total to minimise, "min_mse", "mid", "logdet"} (scalars).
        """
        config = self.config
        nodes, edge = self.encode_speaker(video, audio, frame_mask)
        encoded, logdet = self.encode_listeners(listeners, listener_mask, edge)
        min_mse, _, _ = appropriate_min_mse(nodes, encoded, listener_mask, threshold, frame_mask)
        total = min_mse
        mid = nodes.new_zeros(())
        if config.mid_loss:
            mid = mid_loss(encoded, listener_mask, frame_mask)
            total = total + config.mid_loss_weight * mid
        logdet_term = nodes.new_zeros(())
        if logdet is not None:
            if config.logdet_reduction == "per-element":
                # so its weight depends on neither the batch nor the window size
                logdet_term = logdet.mean() / (nodes.shape[1] * nodes.shape[2])
            else:  # "released": the motor's scalar as the released loss adds it
                logdet_term = logdet
            sign = 1.0 if config.logdet_sign == "add" else -1.0  # "add": the released code
            total = total + sign * config.logdet_weight * logdet_term
        return {"loss": total, "min_mse": min_mse, "mid": mid, "logdet": logdet_term}

    forward = forward_train

    @torch.no_grad()
    def generate_windows(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Windows video [W, T, Dv], audio [W, T, Da] -> reactions [n_samples, W, T, N].

        Each sample draws noise ~ N(0, 1) over all W windows' codes, rescaled (when needed) so
        that its largest magnitude is sqrt(noise_variance), and inverts the motor.
        """
        nodes, edge = self.encode_speaker(video, audio)
        noise_device = generator.device if generator is not None else nodes.device
        noise = torch.randn((n_samples, *nodes.shape), generator=generator, device=noise_device).to(
            device=nodes.device, dtype=nodes.dtype
        )
        largest = noise.flatten(1).abs().amax(dim=1).clamp_min(1e-12)
        factor = (self.config.noise_max_abs / largest).clamp(max=1.0)
        codes = nodes.unsqueeze(0) + noise * factor[:, None, None, None]
        windows = nodes.shape[0]
        reactions = self.motor.inverse(
            codes.reshape(n_samples * windows, *nodes.shape[1:]), edge.repeat(n_samples, 1, 1, 1)
        )
        return reactions.reshape(n_samples, windows, *nodes.shape[1:]).transpose(-1, -2)

    @torch.no_grad()
    def generate(
        self,
        video_clip: torch.Tensor,
        audio_clip: torch.Tensor,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One speaker clip video [L, Dv], audio [L, Da] -> reactions [n_samples, L, N].

        The clip is cut into windows (heads.regnn.windows pads an L that the windows do not
        tile and cuts the result back), each window is generated, and the windows are
        recombined by overlap-add. Runs in eval mode and restores the previous mode.
        """
        config = self.config
        n_samples = n_samples or config.n_samples
        if video_clip.shape[0] != audio_clip.shape[0]:
            raise ValueError(
                f"video has {video_clip.shape[0]} frames but audio has {audio_clip.shape[0]}"
            )
        length = video_clip.shape[0]
        parameter = next(self.parameters())
        video = split_windows(video_clip.to(parameter), config.window, config.stride)
        audio = split_windows(audio_clip.to(parameter), config.window, config.stride)
        was_training = self.training
        self.eval()
        try:
            windows = self.generate_windows(video, audio, n_samples, generator)
        finally:
            self.train(was_training)
        return overlap_add(windows, config.stride, length)
