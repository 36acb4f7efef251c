"""The code versions that go into every stream key, in one torch-free place.

Stream keys are fingerprints of what determines a stream's values, code included: the plan's
version (how clips are decoded and timed) and the encoders' version (preprocessing, padding,
layer choice). The warm-rerun shortcut (extract.resume) answers a request from the store's
metadata without building encoders, so it must key on the same versions; both read them from
here, at call time, so a bump can never reach one and miss the other.
"""

from __future__ import annotations

# Bump when a change in the runner or plan changes the values written (decode, timing, crops).
PLAN_VERSION = "1"
# Bump when a change in extract.encoders changes the values an encoder writes (preprocessing,
# padding, layer choice): every stream key changes with it, so old streams are never reused.
ENCODERS_VERSION = "encoders-1"


def stream_key_versions() -> dict[str, str]:
    """Every code version a stream key depends on (read now, not at import)."""
    return {"plan": PLAN_VERSION, "encoders": ENCODERS_VERSION}
