"""REGNN (REACT 2023): reversible graph networks for multiple appropriate facial reactions.

`Regnn` is the model (heads.regnn.model), `RegnnConfig` its settings with the paper's defaults,
and `RegnnHead` (registered as "regnn" on import) plugs it into the shared trainer.
"""

from heads.regnn.config import RegnnConfig
from heads.regnn.head import RegnnHead
from heads.regnn.model import Regnn

__all__ = ["Regnn", "RegnnConfig", "RegnnHead"]
