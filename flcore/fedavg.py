"""Sample-weighted federated averaging over streaming sums (Σ nᵢ·deltaᵢ, never a list of updates)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WeightedSum:
    """A running Σ n·delta with its sample count ``n``, update count ``k`` and Σ n·loss."""

    size: int
    total: np.ndarray = field(init=False)
    n: int = 0
    k: int = 0
    loss_sum: float = 0.0

    def __post_init__(self) -> None:
        self.total = np.zeros(self.size, dtype=np.float64)

    def add(self, delta: np.ndarray, n: int, loss: float) -> None:
        """Fold in one device update trained on ``n`` samples."""
        self.add_sum(n * np.asarray(delta, dtype=np.float64), n, 1, loss)

    def add_sum(self, weighted: np.ndarray, n: int, k: int, loss: float) -> None:
        """Fold in an already weighted sum (a gateway aggregate) whose samples average ``loss``."""
        if weighted.shape != (self.size,):
            raise ValueError(f"sum has shape {weighted.shape}, expected ({self.size},)")
        if n <= 0 or k <= 0:
            raise ValueError(f"n and k must be positive, got n={n} k={k}")
        self.total += weighted
        self.n += n
        self.k += k
        self.loss_sum += n * float(loss)

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.n if self.n else float("nan")

    def mean_delta(self) -> np.ndarray:
        if self.n == 0:
            raise ValueError("no updates to average")
        return (self.total / self.n).astype(np.float32)


def apply(base: np.ndarray, acc: WeightedSum, server_lr: float = 1.0) -> np.ndarray:
    """The new global weights: ``base + server_lr · Σ n·delta / Σ n`` (plain FedAvg at ``server_lr=1``)."""
    if np.shape(base) != (acc.size,):
        raise ValueError(f"base has shape {np.shape(base)}, expected ({acc.size},)")
    return (np.asarray(base, dtype=np.float32) + np.float32(server_lr) * acc.mean_delta()).astype(np.float32)
