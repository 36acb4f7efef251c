"""CLIP input as RAPT-CLIP's released loader makes it (`preprocess=rapt` of clip-vit-b16).

The public code (`dataloader/video_dataloader.py`, `video_transform.py`) feeds CLIP pixels in
[0, 1] without CLIP's mean/std, and resizes the two crops differently:
- the face crop (box + 20 px margin, cut by the extractor) is squashed to 224x224 with PIL's
  bilinear filter (`GroupResize`), whatever its aspect ratio;
- the body crop (or the whole frame of a clip without a body box) is letterboxed: scaled by
  min(224 / w, 224 / h) with OpenCV's `cv2.resize` (INTER_LINEAR), centred and padded with black
  (one more row or column at the bottom or right when the padding is odd).

OpenCV is not a dependency: `cv2_resize_linear` reproduces its 8-bit INTER_LINEAR arithmetic
(11-bit fixed-point weights, the same rounding; exact 2x reductions average 2x2 blocks as
OpenCV does). Training views (extract/views.py) are placed where the released transforms put
them: the rotation before the face's resize and after the body's letterbox, the flip last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from extract.views import View

SIZE = 224
_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS


@dataclass(frozen=True)
class RaptInput:
    """uint8 RGB frames [N, H, W, 3] -> float [N, 3, size, size] in [0, 1], as RAPT-CLIP."""

    fit: str  # "squash" (faces) | "letterbox" (bodies, whole frames)
    size: int = SIZE
    view: View | None = None

    def describe(self) -> dict[str, Any]:
        return {"pixels": "[0,1], no mean/std", "fit": self.fit, "size": self.size,
                "resize": "PIL bilinear" if self.fit == "squash" else "cv2 INTER_LINEAR",
                **({"view": self.view.name} if self.view else {})}

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import functional as F

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
        out = torch.empty((len(frames), 3, self.size, self.size), dtype=torch.float32)
        for i, frame in enumerate(frames):
            if self.fit == "squash":
                image = Image.fromarray(frame)
                if self.view is not None:
                    image = self.view.rotate(image)
                image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
            else:
                image = Image.fromarray(letterbox(frame, self.size))
                if self.view is not None:
                    image = self.view.rotate(image)
            if self.view is not None:
                image = self.view.flip(image)
            out[i] = F.to_tensor(image)
        return out


def letterbox(frame: np.ndarray, size: int) -> np.ndarray:
    """`frame` scaled to fit `size` x `size` (aspect kept) and padded black, as the released
    `_resize_image`: scale r = min(size / w, size / h), new size int(w r) x int(h r)."""
    height, width = frame.shape[:2]
    ratio = min(size / width, size / height)
    new_w, new_h = int(width * ratio), int(height * ratio)
    scaled = cv2_resize_linear(frame, new_w, new_h)
    pad_w, pad_h = (size - new_w) // 2, (size - new_h) // 2
    out = np.zeros((size, size, frame.shape[2]), dtype=np.uint8)
    out[pad_h:pad_h + new_h, pad_w:pad_w + new_w] = scaled
    return out


def cv2_resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`cv2.resize(image, (width, height))` (INTER_LINEAR) of a uint8 [H, W, C] image."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    scale_x, scale_y = 1.0 / (width / src_w), 1.0 / (height / src_h)  # as OpenCV
    if scale_x == 2 and scale_y == 2:  # OpenCV switches to INTER_AREA: 2x2 block means
        blocks = image[:2 * height, :2 * width].astype(np.int32)
        total = blocks[0::2, 0::2] + blocks[1::2, 0::2] + blocks[0::2, 1::2] + blocks[1::2, 1::2]
        return ((total + 2) >> 2).astype(np.uint8)
    x0, alpha = _taps(width, src_w, clamp=True)
    y0, beta = _taps(height, src_h, clamp=False)
    x1 = np.minimum(x0 + 1, src_w - 1)
    pixels = image.astype(np.int64)
    # horizontal pass: ints at scale 2^11
    rows = pixels[:, x0] * alpha[0][None, :, None] + pixels[:, x1] * alpha[1][None, :, None]
    top = rows[np.clip(y0, 0, src_h - 1)]
    bottom = rows[np.clip(y0 + 1, 0, src_h - 1)]
    b0, b1 = beta[0][:, None, None], beta[1][:, None, None]
    # vertical pass, as OpenCV's VResizeLinear<uchar, int, short>
    value = (((b0 * (top >> 4)) >> 16) + ((b1 * (bottom >> 4)) >> 16) + 2) >> 2
    return np.clip(value, 0, 255).astype(np.uint8)


@lru_cache(maxsize=64)  # one per distinct crop size: frames of a clip share theirs
def _taps(out_len: int, in_len: int, clamp: bool
          ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """First source index per output index and its two fixed-point weights (OpenCV's float32
    source coordinate (d + 0.5) * scale - 0.5 with scale = 1 / (out / in); x clamps the
    coordinate at both edges, y only clamps the rows it reads)."""
    scale = 1.0 / (out_len / in_len)
    starts = np.empty(out_len, np.int64)
    weights = np.empty((2, out_len), np.int64)
    for d in range(out_len):
        position = np.float32((d + 0.5) * scale - 0.5)
        first = math.floor(position)
        fraction = np.float32(position - np.float32(first))
        if clamp and first < 0:
            first, fraction = 0, np.float32(0)
        if clamp and first >= in_len - 1:
            first, fraction = in_len - 1, np.float32(0)
        starts[d] = first
        weights[0, d] = _round_half_even(np.float32(1) - fraction)
        weights[1, d] = _round_half_even(fraction)
    return starts, (weights[0], weights[1])


def _round_half_even(value: np.float32) -> int:
    return int(np.rint(np.float32(value) * np.float32(_COEF_SCALE)))
