"""RAPT-CLIP temporal-attention head for RAER (registered as "temporal_attention" on import)."""

from heads.temporal_attention.config import TemporalAttentionConfig
from heads.temporal_attention.head import TemporalAttentionHead
from heads.temporal_attention.model import TemporalAttentionClip

__all__ = ["TemporalAttentionClip", "TemporalAttentionConfig", "TemporalAttentionHead"]
