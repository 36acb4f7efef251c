"""Building blocks of the generated sample datasets: planted signals rendered as media.

A sample is a tiny copy of a dataset layout with real encoded files whose content carries its
labels (colour, motion and tone follow the label), so a head trained on features of the sample
learns something and a broken pipeline shows up as chance-level results.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class SampleOptions:
    clips: int
    seconds: float
    seed: int
    size: int


@dataclass
class SampleInfo:
    """What a generator wrote: where, how many clips, and the signal it planted."""

    layout: str
    root: str
    clips: int
    seconds: float
    seed: int
    size: int
    signal: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self) -> None:
        Path(self.root, "SAMPLE.json").write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def smooth_signal(rng: np.random.Generator, n: int, fps: float, period_s: float = 2.0
                  ) -> np.ndarray:
    """A slowly varying signal in [-1, 1]: white noise low-passed over about `period_s`."""
    n = max(int(n), 1)
    width = max(1, int(round(period_s * fps / 2)))
    noise = rng.normal(size=n + 2 * width)
    kernel = np.hanning(2 * width + 1)
    smooth = np.convolve(noise, kernel / kernel.sum(), mode="same")[width: width + n]
    scale = np.max(np.abs(smooth)) or 1.0
    return (smooth / scale).astype(np.float32)


def render_frames(colours: np.ndarray, size: int | tuple[int, int],
                  marker: np.ndarray | None = None,
                  marker_colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """[T, H, W, 3] uint8: each frame filled with colours[t] (RGB in [0, 1]) plus a square marker.

    `marker` [T, 2] in [-1, 1] is the square's (x, y) position: motion a video encoder can see.
    """
    height, width = (size, size) if isinstance(size, int) else size
    colours = np.clip(np.asarray(colours, dtype=np.float32), 0.0, 1.0)
    frames = np.empty((len(colours), height, width, 3), dtype=np.uint8)
    frames[:] = (colours * 255).astype(np.uint8)[:, None, None, :]
    if marker is not None:
        side = max(2, min(height, width) // 5)
        xs = ((np.asarray(marker)[:, 0] + 1) / 2 * (width - side)).astype(int)
        ys = ((np.asarray(marker)[:, 1] + 1) / 2 * (height - side)).astype(int)
        for t, (x, y) in enumerate(zip(xs, ys)):
            frames[t, y: y + side, x: x + side] = marker_colour
    return frames


def circle_path(n: int, fps: float, turns_per_s: float, phase: float = 0.0) -> np.ndarray:
    """[n, 2] positions going round a circle: the marker's speed encodes `turns_per_s`."""
    angle = phase + 2 * np.pi * turns_per_s * np.arange(n) / fps
    return np.stack([0.8 * np.cos(angle), 0.8 * np.sin(angle)], axis=1)


def tone_track(freq_per_frame: np.ndarray, fps: float, sample_rate: int,
               amplitude: np.ndarray | float = 0.3, rng: np.random.Generator | None = None,
               noise: float = 0.01) -> np.ndarray:
    """Mono float32 audio whose pitch follows `freq_per_frame` (phase-continuous), plus hiss."""
    freq = np.asarray(freq_per_frame, dtype=np.float64)
    n_samples = int(round(len(freq) / fps * sample_rate))
    frame_of_sample = np.minimum((np.arange(n_samples) * fps / sample_rate).astype(int),
                                 len(freq) - 1)
    phase = 2 * np.pi * np.cumsum(freq[frame_of_sample]) / sample_rate
    amp = np.broadcast_to(np.asarray(amplitude, dtype=np.float64), freq.shape)[frame_of_sample]
    audio = amp * np.sin(phase)
    if rng is not None and noise:
        audio = audio + rng.normal(0.0, noise, size=n_samples)
    return audio.astype(np.float32)


def hue_colour(hue: float, value: float = 0.9, saturation: float = 0.8) -> np.ndarray:
    """RGB in [0, 1] of a hue in [0, 1): distinct classes get distinct colours."""
    h = (hue % 1.0) * 6
    i = int(h)
    f = h - i
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), \
        value * (1 - saturation * (1 - f))
    return np.array([(value, t, p), (q, value, p), (p, value, t), (p, q, value),
                     (t, p, value), (value, p, q)][i % 6], dtype=np.float32)


def split_sizes(n: int, fractions: tuple[float, ...]) -> list[int]:
    """n items into len(fractions) groups, every group at least one (n >= groups)."""
    sizes = [max(1, int(n * f)) for f in fractions[1:]]
    first = n - sum(sizes)
    if first < 1:
        raise ValueError(f"{n} items are too few for {len(fractions)} groups")
    return [first, *sizes]
