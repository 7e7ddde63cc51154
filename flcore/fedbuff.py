"""FedBuff-style buffered asynchronous aggregation: stale updates count, discounted by how far behind they are.

An update trained from a model ``s`` rounds behind the open one (its *staleness*) is folded into the same
``WeightedSum`` as fresh ones, with its ``n · delta`` scaled by ``staleness_weight(s)`` (1/√(1+s) by default) while
its samples ``n`` count fully: the buffer's mean delta is ``Σ w(sᵢ)·nᵢ·deltaᵢ / Σ nᵢ``, FedBuff's
``(1/K) Σ w(sᵢ)·Δᵢ`` with sample weights. A ``Buffer`` folds into the model every ``every`` (K) accepted updates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flcore.fedavg import WeightedSum, apply

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
    acc: WeightedSum, delta: np.ndarray, n: int, loss: float, staleness: int, exponent: float = DEFAULT_EXPONENT
) -> float:
    """Fold one update ``staleness`` rounds behind into ``acc`` with its discounted weight; returns the weight."""
    weight = staleness_weight(staleness, exponent)
    acc.add_sum(weight * n * np.asarray(delta, dtype=np.float64), n, 1, loss)
    return weight


@dataclass
class Buffer:
    """FedBuff's server buffer: collect updates, ``full`` after ``every`` (K) of them, then ``fold`` into the model."""

    size: int
    every: int
    exponent: float = DEFAULT_EXPONENT
    sum: WeightedSum = field(init=False)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"K must be ≥ 1, got {self.every}")
        self.sum = WeightedSum(self.size)

    def add(self, delta: np.ndarray, n: int, loss: float, staleness: int = 0) -> float:
        """Buffer one update; returns its staleness weight."""
        return add_stale(self.sum, delta, n, loss, staleness, self.exponent)

    @property
    def full(self) -> bool:
        return self.sum.k >= self.every

    def fold(self, base: np.ndarray, server_lr: float = 1.0) -> np.ndarray:
        """The new weights ``base + server_lr · Σ w·n·delta / Σ n``; empties the buffer."""
        weights = apply(base, self.sum, server_lr)
        self.sum = WeightedSum(self.size)
        return weights


__all__ = ["Buffer", "DEFAULT_EXPONENT", "MAX_STALENESS", "MODES", "add_stale", "staleness_weight"]
