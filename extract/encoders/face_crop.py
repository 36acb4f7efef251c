"""Face crops the way the released Affective-TRM video encoder takes them (`src/encoders/video.py`).

Per frame: facenet-pytorch's MTCNN with the settings it uses (the largest face, a 160 x 160 crop
without margin, MTCNN's own post-processing (x - 127.5) / 128), then a min-max stretch of that
crop to 0..255 cast to uint8, then the image encoder's own preprocessing. A frame without a face
becomes an image of NaN, which the encoder turns into a row of zeros (the released encoder's
empty row, filled later from the previous frame by the TRM head's released sampling).

facenet-pytorch's wheel ships the three MTCNN networks' weights, so detection runs offline. Its
metadata pins torch < 2.3, numpy < 2 and Pillow < 10.3, older than our stack, although its code
runs on our torch: it is installed without its dependencies (`make setup` does
`pip install --no-deps facenet-pytorch==2.6.0`; see setup.cfg), and its detector is built here,
once per process, from the files it ships.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract.encoders.base import ImagePreprocess
from features_store.errors import UserError

FACE_CROPS = ("none", "mtcnn")
PACKAGE = "facenet-pytorch"
INSTALL = f"pip install --no-deps {PACKAGE}==2.6.0"
# MTCNN(keep_all=False, select_largest=True) as the released encoder builds it; the rest are
# facenet-pytorch's defaults, written out because they determine the crops
MTCNN_SETTINGS = {"image_size": 160, "margin": 0, "min_face_size": 20,
                  "thresholds": [0.6, 0.7, 0.7], "factor": 0.709, "post_process": True,
                  "select_largest": True, "keep_all": False}
NETWORKS = ("pnet.pt", "rnet.pt", "onet.pt")


def _package_dir() -> Path:
    try:
        import facenet_pytorch
    except ImportError:
        raise UserError(f"face_crop=mtcnn needs {PACKAGE} (the released code's MTCNN); "
                        f"install it with: {INSTALL}") from None
    return Path(facenet_pytorch.__file__).parent


def detector_identity() -> dict[str, Any]:
    """The detector's version and the sha256 of the network weights its wheel ships (part of
    the stream key: other weights, other crops)."""
    folder = _package_dir() / "data"
    digest = hashlib.sha256()
    for name in NETWORKS:
        digest.update((folder / name).read_bytes())
    return {"package": PACKAGE, "version": metadata.version(PACKAGE),
            "weights_sha256": digest.hexdigest()}


@lru_cache(maxsize=1)
def _detector() -> Any:
    """facenet-pytorch's MTCNN on the CPU, built once per (decode worker) process."""
    _package_dir()
    from facenet_pytorch import MTCNN

    return MTCNN(device="cpu", **MTCNN_SETTINGS).eval()


def stretch_to_uint8(face: torch.Tensor) -> np.ndarray:
    """A [3, S, S] post-processed crop -> [S, S, 3] uint8, min-max stretched to 0..255 and
    truncated, as the released encoder hands crops to HSEmotion."""
    face_np = face.permute(1, 2, 0).cpu().numpy()
    face_np = (face_np - face_np.min()) / (face_np.max() - face_np.min()) * 255
    return face_np.astype(np.uint8)


@dataclass(frozen=True)
class MtcnnFaceCrop:
    """uint8 RGB frames -> the encoder's input tensors of each frame's largest face (NaN where
    no face is found). Plain fields only, so it pickles into decode workers."""

    image: ImagePreprocess

    @property
    def size(self) -> int:
        return self.image.size

    def describe(self) -> dict[str, Any]:
        return {**self.image.describe(),
                "face_crop": {"detector": "mtcnn", **MTCNN_SETTINGS,
                              "stretch": "min-max to 0..255, uint8", "no_face": "zeros"}}

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        from PIL import Image

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
        out = torch.full((len(frames), 3, self.size, self.size), float("nan"))
        detector = _detector()
        for i, frame in enumerate(frames):
            # One frame per call: a list of frames with and without faces makes MTCNN's face
            # selection build a ragged numpy array, which numpy >= 1.24 refuses (the released
            # encoder then zeroes the whole clip; the TRM head's released sampling does that
            # from the per-frame rows written here).
            with torch.inference_mode():
                face = detector(Image.fromarray(frame))
            if face is not None:
                out[i] = self.image(stretch_to_uint8(face)[None])[0]
        return out
