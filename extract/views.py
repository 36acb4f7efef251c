"""Augmented views: fixed pixel transforms of a stream's input, each extracted as its own stream.

A head trained on cached features cannot rotate or flip an image at every epoch; it can draw,
per clip and epoch, one of a few views extracted once (`affect extract --views hflip,rot-4,rot+4`).
A view is "hflip" (mirror left-right) or "rot<degrees>" (rotate counter-clockwise about the
centre, same size, black corners: PIL's `Image.rotate(angle)`, as the RAPT-CLIP loader's
`RandomRotation` does). Each view's stream records the view in its preprocessing (so in its key)
and the key of its plain stream (`extra["view_of"]`), and its alias is the plain alias + "~view".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from features_store.errors import UserError

_ROTATION = re.compile(r"^rot([+-]?\d+(?:\.\d+)?)$")
VIEW_SEPARATOR = "~"


@dataclass(frozen=True)
class View:
    name: str
    degrees: float = 0.0  # counter-clockwise rotation, 0: none
    hflip: bool = False

    def rotate(self, image: Any) -> Any:
        """`image` (PIL) rotated by this view's angle (nearest neighbour, as PIL's default)."""
        return image.rotate(self.degrees) if self.degrees else image

    def flip(self, image: Any) -> Any:
        from PIL import Image

        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.hflip else image

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """A uint8 [H, W, 3] frame rotated then flipped."""
        from PIL import Image

        return np.asarray(self.flip(self.rotate(Image.fromarray(frame))))


def parse_view(name: str) -> View:
    text = name.strip()
    if text == "hflip":
        return View(text, hflip=True)
    match = _ROTATION.match(text)
    if match and float(match.group(1)) != 0:
        return View(text, degrees=float(match.group(1)))
    raise UserError(f"--views: unknown view {name!r} (use hflip or rot<degrees>, e.g. "
                    "hflip,rot-4,rot+4)")


def parse_views(text: str | None) -> list[str]:
    """View names from a comma-separated list, checked, without repeats, in the given order."""
    names: list[str] = []
    for item in (text or "").split(","):
        if item.strip() and item.strip() not in names:
            names.append(parse_view(item).name)
    return names


def split_view(request: str) -> tuple[str, str | None]:
    """`clip-vit-b16@face~hflip` -> (`clip-vit-b16@face`, `hflip`)."""
    base, _, view = request.partition(VIEW_SEPARATOR)
    return base, (view or None)


@dataclass(frozen=True)
class ViewedFrames:
    """A frames -> tensor transform that applies a view to the uint8 frames first (frozen: it
    pickles into decode workers and equal ones are shared)."""

    view: View
    inner: Any

    def __call__(self, frames: np.ndarray) -> Any:
        return self.inner(np.stack([self.view.apply(f) for f in frames]))
