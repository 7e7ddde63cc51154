"""Coordinate-wise trimmed mean: per parameter, drop the ``floor(trim × k)`` largest and smallest values and
average the rest (unweighted: ``n`` buys no influence)."""

from __future__ import annotations

import numpy as np

from flcore.robust.params import RuleParams
from flcore.robust.rows import Robust, Rows


def aggregate(rows: Rows, params: RuleParams) -> Robust:
    k = len(rows)
    cut = int(params.trim * k)  # trim < 0.5 leaves at least one value per coordinate

    def reduce(block: np.ndarray) -> np.ndarray:
        return np.sort(block, axis=0)[cut : k - cut].mean(axis=0)

    return Robust(rows.columnwise(reduce), np.ones(k, dtype=bool))


__all__ = ["aggregate"]
