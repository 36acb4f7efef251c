"""Frames as they are meant to be shown: the display matrix of a video (phones' rotation flag).

A phone filming in portrait usually stores landscape pictures plus a display matrix that says
"rotate by 90 degrees to show". ffmpeg, players and ffprobe apply it (a 160x120 stream with
rotation 90 plays as 120x160); ignoring it would encode faces sideways. The matrix (libavutil's
``AV_FRAME_DATA_DISPLAYMATRIX``: 3x3 int32, 16.16 fixed point for its 2x2 part) maps a source
pixel (x, y) to the displayed ``(a*x + c*y, b*x + d*y)`` up to a shift. For right-angle
rotations and mirrors, which is all that cameras write, that is a transpose and/or flips of the
pixel array, applied here exactly as ffmpeg's automatic rotation does. Other angles are refused:
ffmpeg would resample them onto a larger canvas, which is not a crop any encoder expects.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

_DISPLAYMATRIX = av.sidedata.sidedata.Type.DISPLAYMATRIX
_TOLERANCE = 1e-3  # of the matrix entries, which are +-1 or 0 for right angles


@dataclass(frozen=True)
class Orientation:
    """How to turn a decoded array [H, W, C] into the displayed picture."""

    transpose: bool = False  # swap rows and columns (90 / 270 degrees)
    flip_rows: bool = False  # then reverse the row order (vertical flip)
    flip_cols: bool = False  # then reverse the column order (horizontal flip)

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.identity:
            return image
        out = image.swapaxes(0, 1) if self.transpose else image
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def displayed_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) once shown."""
        return (height, width) if self.transpose else (width, height)


IDENTITY = Orientation()


class UnsupportedRotation(ValueError):
    """A display matrix that is not a right-angle rotation or mirror."""


def orientation_of(frame: av.VideoFrame) -> Orientation:
    """The orientation a decoded frame's display matrix asks for (identity without one)."""
    side_data = frame.side_data.get(_DISPLAYMATRIX)
    if side_data is None:
        return IDENTITY
    matrix = np.frombuffer(bytes(side_data), dtype=np.int32)
    if matrix.size != 9:
        return IDENTITY
    return orientation_from_matrix(matrix.reshape(3, 3))


def orientation_from_matrix(matrix: np.ndarray) -> Orientation:
    """Orientation from a 3x3 int32 display matrix (rows ``a b u / c d v / x y w``)."""
    a, b = matrix[0, 0] / 65536.0, matrix[0, 1] / 65536.0
    c, d = matrix[1, 0] / 65536.0, matrix[1, 1] / 65536.0
    scale = max(abs(a), abs(b), abs(c), abs(d))
    if scale == 0:
        return IDENTITY  # an all-zero matrix says nothing; ffmpeg ignores it too
    a, b, c, d = (v / scale for v in (a, b, c, d))
    if abs(b) < _TOLERANCE and abs(c) < _TOLERANCE and abs(abs(a) - 1) < _TOLERANCE \
            and abs(abs(d) - 1) < _TOLERANCE:
        # Displayed column = a * x, displayed row = d * y.
        return Orientation(transpose=False, flip_rows=d < 0, flip_cols=a < 0)
    if abs(a) < _TOLERANCE and abs(d) < _TOLERANCE and abs(abs(b) - 1) < _TOLERANCE \
            and abs(abs(c) - 1) < _TOLERANCE:
        # Displayed column = c * y, displayed row = b * x: a transpose, then flips.
        return Orientation(transpose=True, flip_rows=b < 0, flip_cols=c < 0)
    degrees = float(np.degrees(np.arctan2(b, a)))
    raise UnsupportedRotation(
        f"display matrix rotates by {degrees:.1f} degrees, not a multiple of 90; re-encode it "
        "upright first (ffmpeg -i IN -vf 'rotate=...' OUT)")


__all__ = ["IDENTITY", "Orientation", "UnsupportedRotation", "orientation_from_matrix",
           "orientation_of"]
