"""The gateway's own copy of the model across its sub-rounds, and the ``sum`` it reports for the round."""

from __future__ import annotations

import numpy as np

from flcore.fedavg import WeightedSum


class LocalModel:
    """``w_gateway = w_base + drift``; each closed sub-round adds its sample-weighted mean delta to ``drift``.

    ``drift`` stays float64 so that with one sub-round the reported sum equals the devices' Σ nᵢ·deltaᵢ exactly.
    Width-sliced updates (flcore.hetero) move each parameter by its mean over the devices that trained it, and
    ``cover`` adds up, over the sub-rounds, the samples behind each parameter (None while every update was whole).
    """

    def __init__(self, base: np.ndarray) -> None:
        self.base = np.asarray(base, dtype=np.float32).copy()
        self.drift = np.zeros(self.base.shape, dtype=np.float64)
        self.cover: np.ndarray | None = None
        self._n = 0

    @property
    def weights(self) -> np.ndarray:
        """The float32 weights devices train from in the next sub-round."""
        return (self.base + self.drift).astype(np.float32)

    def fold(self, total: WeightedSum) -> None:
        """Move the gateway weights by the sub-round's mean delta (nothing when it accepted no update)."""
        if total.n == 0:
            return
        self.drift += total.mean()
        if total.cover is not None or self.cover is not None:
            self.cover = (np.full(self.drift.shape, float(self._n)) if self.cover is None else self.cover) + (
                total.cover if total.cover is not None else total.n
            )
        self._n += total.n

    def aggregate_sum(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``n · (w_gateway − w_base)``: what the cloud averages with the other gateways' sums, dividing by their
        ``n``; once a sliced update came in, per parameter ``cover · drift`` and that ``cover`` (``n`` times the share
        of the round's samples that trained the parameter), which the cloud divides by instead."""
        if self.cover is None:
            return (n * self.drift).astype(np.float32), None
        cover = (n * self.cover / self._n).astype(np.float32)
        return (cover.astype(np.float64) * self.drift).astype(np.float32), cover


__all__ = ["LocalModel"]
