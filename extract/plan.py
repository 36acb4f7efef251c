"""What a run extracts: one `StreamPlan` per requested stream.

Streams are asked for as `name[@crop]`, e.g. `clip-vit-b16@face`: the same encoder on the face or
body boxes a dataset ships. Each plan carries its encoder, its StreamInfo (so its key) and how its
input is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from features_store import StreamInfo
from features_store.errors import UserError

from . import versions

EXTRACTOR_VERSION = versions.PLAN_VERSION  # kept for importers; bump it in extract.versions
CROPS = ("face", "body")
DEFAULT_VIDEO_FPS = 25.0
FACE_MARGIN_PX = 20  # RAER crops faces with a 20 px margin


@dataclass
class StreamPlan:
    request: str          # as the user wrote it, e.g. "clip-vit-b16@face"
    encoder: object       # extract.encoders.Encoder
    crop: str | None
    fps: float | None     # video decode rate
    info: StreamInfo

    @property
    def modality(self) -> str:
        return self.encoder.spec.modality


def compute_identity(device: str) -> dict[str, str]:
    """Where and at which precision a model runs: part of every stream key.

    fp16 autocast on a GPU and fp32 on a CPU give different values, so they are different
    streams; which GPU (`cuda:0` or `cuda:3`) does not matter.
    """
    kind = device.split(":", 1)[0]
    return {"device": kind, "precision": "float16-autocast" if kind == "cuda" else "float32"}


def parse_request(request: str) -> tuple[str, str | None]:
    name, _, crop = request.strip().partition("@")
    if crop and crop not in CROPS:
        raise UserError(f"encoder {request!r}: unknown crop {crop!r} (use one of {CROPS})")
    return name, crop or None


def stream_info(encoder, crop: str | None, fps: float | None, dtype: str) -> StreamInfo:
    spec = encoder.spec
    fingerprint = encoder.fingerprint()
    preprocessing = {"encoder": fingerprint,
                     "extractor_version": versions.stream_key_versions()["plan"]}
    if spec.modality == "video":
        preprocessing.update({"fps": fps, "crop": crop,
                              "crop_margin_px": FACE_MARGIN_PX if crop == "face" else 0})
        frame_shift = 1.0 / fps if fps else None
    elif spec.modality == "audio":
        frame_shift = spec.frame_shift_s
    else:
        frame_shift = None
    weights = encoder.weights_source
    return StreamInfo(
        name=spec.name,
        kind="feature",
        dim=spec.dim,
        dtype=dtype,
        frame_shift_s=frame_shift,
        alias=encoder.alias + (f"@{crop}" if crop else ""),
        weights=weights,
        weights_sha256=fingerprint.get("weights_sha256"),
        preprocessing=preprocessing,
        code_version=f"affect-extract-{versions.stream_key_versions()['plan']}",
        extra={"library": spec.library, "modality": spec.modality,
               "random_weights": weights == "random", "request": spec.name},
    )
