"""features_store: the chunked, ragged feature store that extraction writes and heads read.

Imports neither `extract` nor `heads`: a store can be read on a machine with no video and no
encoder weights.
"""

from .commit import LeaseLost, PartCommitted
from .errors import UserError
from .manifest import ClipEntry, ClipShape, PartManifest, StreamInfo
from .store import FeatureStore, open_store
from .stream_array import StreamArray
from .verify import VerifyReport, verify

__all__ = [
    "ClipEntry",
    "ClipShape",
    "FeatureStore",
    "LeaseLost",
    "PartCommitted",
    "PartManifest",
    "StreamArray",
    "StreamInfo",
    "UserError",
    "VerifyReport",
    "open_store",
    "verify",
]
