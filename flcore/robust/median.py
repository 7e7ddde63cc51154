"""Coordinate-wise median of the updates (unweighted: ``n`` buys no influence)."""

from __future__ import annotations

import numpy as np

from flcore.robust.params import RuleParams
from flcore.robust.rows import Robust, Rows


def aggregate(rows: Rows, params: RuleParams) -> Robust:
    del params  # the median has none

    def reduce(block: np.ndarray) -> np.ndarray:
        return np.median(block, axis=0)

    return Robust(rows.columnwise(reduce), np.ones(len(rows), dtype=bool))


__all__ = ["aggregate"]
