"""What a run extracts: one `StreamPlan` per requested stream.

Streams are asked for as `name[@marker...][@crop]`, e.g. `clip-vit-b16@face`: the same encoder on
the face or body boxes a dataset ships; a marker sets encoder options (`clip-vit-b16@rapt@face`:
preprocess=rapt; specs.REQUEST_MARKERS). With `--views`, each video request also makes one
stream per augmented view (`clip-vit-b16@face~hflip`, extract/views.py). Each plan carries its
encoder, its StreamInfo (so its key) and how its input is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from features_store import StreamInfo
from features_store.errors import UserError

from . import versions
from .views import VIEW_SEPARATOR, split_view

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
    view: str | None = None  # an augmented view of the frames (extract/views.py)

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
    """(encoder name, crop) of `name[@marker...][@crop][~view]`."""
    name, crop, _ = _parts(request)
    return name, crop


def request_options(request: str) -> dict:
    """The encoder options the request's markers set (`clip-vit-b16@rapt@face`: preprocess=rapt)."""
    from .encoders.specs import REQUEST_MARKERS

    name, _, markers = _parts(request)
    options: dict = {}
    for marker in markers:
        options.update(REQUEST_MARKERS[name][marker])
    return options


def _parts(request: str) -> tuple[str, str | None, list[str]]:
    from .encoders.specs import REQUEST_MARKERS

    base, _ = split_view(request.strip())
    name, *rest = base.split("@")
    crop = rest.pop() if rest and rest[-1] in CROPS else None
    known = REQUEST_MARKERS.get(name, {})
    for marker in rest:
        if marker not in known:
            what = f"option marker or crop (markers: {', '.join(known)})" if known else "crop"
            raise UserError(f"encoder {request!r}: unknown {what} {marker!r} (crops: "
                            f"{', '.join(CROPS)})")
    return name, crop, rest


def view_info(plain: StreamInfo, view: str) -> StreamInfo:
    """The StreamInfo of view `view` of stream `plain`: the view is in its preprocessing (so
    its key), its provenance names the plain stream, its alias is the plain one + "~view"."""
    import copy

    info = copy.deepcopy(plain)
    info.preprocessing["view"] = view
    info.alias = f"{plain.alias}{VIEW_SEPARATOR}{view}"
    info.extra["view_of"] = plain.with_key().key
    return info


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
