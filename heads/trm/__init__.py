"""Affective-TRM (CREMA-D continuous valence/arousal): the Tiny Recursive Model head, registered
as "trm" on import."""

from heads.trm.config import TRMConfig
from heads.trm.head import TRMHead
from heads.trm.model import TinyRecursiveModel

__all__ = ["TRMConfig", "TRMHead", "TinyRecursiveModel"]
