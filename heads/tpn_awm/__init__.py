"""AWTPN prototype head for IEMOCAP, MELD and CMU-MOSEI (registered as "tpn_awm" on import)."""

from heads.tpn_awm.config import TpnAwmConfig
from heads.tpn_awm.head import TpnAwmHead
from heads.tpn_awm.model import Awtpn

__all__ = ["Awtpn", "TpnAwmConfig", "TpnAwmHead"]
