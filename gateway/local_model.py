"""The gateway's own copy of the model across its sub-rounds, and the ``sum`` it reports for the round."""

from __future__ import annotations

import numpy as np

from flcore.fedavg import WeightedSum


class LocalModel:
    """``w_gateway = w_base + drift``; each closed sub-round adds its sample-weighted mean delta to ``drift``.

    ``drift`` stays float64 so that with one sub-round the reported sum equals the devices' Σ nᵢ·deltaᵢ exactly.
    """

    def __init__(self, base: np.ndarray) -> None:
        self.base = np.asarray(base, dtype=np.float32).copy()
        self.drift = np.zeros(self.base.shape, dtype=np.float64)

    @property
    def weights(self) -> np.ndarray:
        """The float32 weights devices train from in the next sub-round."""
        return (self.base + self.drift).astype(np.float32)

    def fold(self, total: WeightedSum) -> None:
        """Move the gateway weights by the sub-round's mean delta (nothing when it accepted no update)."""
        if total.n > 0:
            self.drift += total.total / total.n

    def aggregate_sum(self, n: int) -> np.ndarray:
        """``n · (w_gateway − w_base)``: what the cloud averages with the other gateways' sums."""
        return (n * self.drift).astype(np.float32)


__all__ = ["LocalModel"]
