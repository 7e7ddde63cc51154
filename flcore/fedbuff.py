"""FedBuff-style buffered asynchronous aggregation: stale updates count, discounted by how far behind they are.

An update trained from a model ``s`` rounds behind the open one (its *staleness*) is folded into the same
``WeightedSum`` as fresh ones, with its ``n · delta`` scaled by ``staleness_weight(s)`` (1/√(1+s) by default) while
its samples ``n`` count fully: the buffer's mean delta is ``Σ w(sᵢ)·nᵢ·deltaᵢ / Σ nᵢ``, FedBuff's
``(1/K) Σ w(sᵢ)·Δᵢ`` with sample weights. The gateway folds the sum into its model when a (sub-)round closes, which
``--quorum K`` makes every K accepted updates.
"""

from __future__ import annotations

import math

import numpy as np

from flcore.fedavg import WeightedSum

MODES = ("sync", "async")
DEFAULT_EXPONENT = 0.5
# Updates further behind than this are refused `late` even in async mode (bounds what a gateway must remember).
MAX_STALENESS = 3


def staleness_weight(staleness: int, exponent: float = DEFAULT_EXPONENT) -> float:
    """``1 / (1 + s)^exponent``: 1 for a fresh update, 1/√2 one round behind, 1/√3 two behind (default exponent)."""
    if staleness < 0:
        raise ValueError(f"staleness must be ≥ 0, got {staleness}")
    if exponent < 0:
        raise ValueError(f"exponent must be ≥ 0, got {exponent}")
    return 1.0 / math.pow(1.0 + staleness, exponent)


def add_stale(
    acc: WeightedSum,
    delta: np.ndarray,
    n: int,
    loss: float,
    staleness: int,
    exponent: float = DEFAULT_EXPONENT,
    idx: np.ndarray | None = None,
) -> float:
    """Fold one update ``staleness`` rounds behind into ``acc`` with its discounted weight (a width-sliced one's
    ``delta`` at full positions ``idx``); returns the weight."""
    weight = staleness_weight(staleness, exponent)
    if idx is not None:
        acc.add_sliced(weight * np.asarray(delta, dtype=np.float64), idx, n, loss)
    else:
        acc.add_sum(weight * n * np.asarray(delta, dtype=np.float64), n, 1, loss)
    return weight


__all__ = ["DEFAULT_EXPONENT", "MAX_STALENESS", "MODES", "add_stale", "staleness_weight"]
