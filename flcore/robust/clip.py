"""Norm clipping: each update scaled to norm ≤ C (C fixed, or the median norm of the round's updates when 0), then
their mean weighted by sample counts capped at ``n_cap × median n``."""

from __future__ import annotations

import numpy as np

from flcore.robust.params import RuleParams
from flcore.robust.rows import Robust, Rows, capped_n


def aggregate(rows: Rows, params: RuleParams) -> Robust:
    norms = rows.norms()
    bound = params.clip_norm or float(np.median(norms))
    factors = np.ones_like(norms)
    over = norms > bound
    factors[over] = bound / norms[over]
    weights = capped_n(rows.n, params.n_cap)
    return Robust(rows.weighted_sum(weights * factors) / weights.sum(), np.ones(len(rows), dtype=bool))


__all__ = ["aggregate"]
