"""Coordinate-wise trimmed mean: per parameter, drop the ⌈trim × k⌉ (``covering``) largest and smallest values and
average the rest, at least one (unweighted: ``n`` buys no influence)."""

from __future__ import annotations

import numpy as np

from flcore.robust.params import RuleParams, covering
from flcore.robust.rows import Robust, Rows


def aggregate(rows: Rows, params: RuleParams) -> Robust:
    k = len(rows)
    cut = min(covering(params.trim, k), (k - 1) // 2)

    def reduce(block: np.ndarray) -> np.ndarray:
        return np.sort(block, axis=0)[cut : k - cut].mean(axis=0)

    return Robust(rows.columnwise(reduce), np.ones(k, dtype=bool))


__all__ = ["aggregate"]
