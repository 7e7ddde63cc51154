"""Multi-Krum (Blanchard et al. 2017): with f assumed attackers, score each update by the sum of squared distances
to its k − f − 2 nearest others, keep the m = k − f best scored and average them weighted by sample counts capped
at ``n_cap × median n``. Distances come from the rows' Gram matrix, built block by block.

f = ⌈krum_f × k⌉ (``covering``), capped at ⌊(k − 3) / 2⌋: Krum's guarantee needs k > 2f + 2, and assuming more
attackers than that only drops honest updates (at k ≤ 4 no f fits: the weighted mean)."""

from __future__ import annotations

import numpy as np

from flcore.robust.params import RuleParams, covering
from flcore.robust.rows import Robust, Rows, capped_n


def scores(gram: np.ndarray, f: int) -> np.ndarray:
    """Each row's Krum score from the Gram matrix (k ≥ 2)."""
    k = len(gram)
    sq = np.diag(gram)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0.0)
    np.fill_diagonal(dist, np.inf)
    neighbours = min(k - 1, max(1, k - f - 2))
    return np.sort(dist, axis=1)[:, :neighbours].sum(axis=1)


def assumed_attackers(krum_f: float, k: int) -> int:
    """f for k updates: ``krum_f`` of them rounded up, at most the ⌊(k − 3) / 2⌋ Krum tolerates."""
    return max(0, min(covering(krum_f, k), (k - 3) // 2))


def aggregate(rows: Rows, params: RuleParams) -> Robust:
    k = len(rows)
    f = assumed_attackers(params.krum_f, k)
    kept = np.ones(k, dtype=bool)
    if f > 0:
        kept[:] = False
        kept[np.argsort(scores(rows.gram(), f), kind="stable")[: k - f]] = True
    weights = np.where(kept, capped_n(rows.n, params.n_cap), 0.0)
    return Robust(rows.weighted_sum(weights) / weights.sum(), kept)


__all__ = ["aggregate", "assumed_attackers", "scores"]
