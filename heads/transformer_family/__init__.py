"""The ABAW 2022 transformer-LSTM family (Aff-Wild2 valence/arousal): `transformer`,
`transformer-lstm`, `transformer-attention` and `fclstm-xl`, registered on import."""

from heads.transformer_family.head import (
    FCLSTMXLHead,
    TransformerAttentionHead,
    TransformerFamilyHead,
    TransformerHead,
    TransformerLSTMHead,
)

__all__ = [
    "FCLSTMXLHead",
    "TransformerAttentionHead",
    "TransformerFamilyHead",
    "TransformerHead",
    "TransformerLSTMHead",
]
