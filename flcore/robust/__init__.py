"""Robust aggregation rules (opt-in; plain FedAvg, the streaming ``WeightedSum``, stays the default).

One module per rule, each ``aggregate(rows, params) -> Robust`` over the updates held as int8 rows (``Rows``):
``clip`` (norm clipping), ``trimmed-mean`` and ``median`` (coordinate-wise), ``krum`` (Multi-Krum). The gateway
applies a rule to its devices' updates at each sub-round's close, the cloud to the gateways' mean deltas; both
hand the result on as a ``WeightedSum`` whose ``total / n`` is the robust mean (``robust_sum``), so whatever
consumes the sum is unchanged. Order-statistic rules weigh updates equally; mean-based ones (clip, krum) weigh
them by ``min(n, n_cap × median n)``, so no update buys weight by lying about ``n``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flcore.fedavg import WeightedSum
from flcore.robust import clip, krum, median, trimmed_mean
from flcore.robust.params import FEDAVG, RuleParams
from flcore.robust.rows import BLOCK_FLOATS, Robust, Rows, capped_n

Rule = Callable[[Rows, RuleParams], Robust]

RULES: dict[str, Rule] = {
    "clip": clip.aggregate,
    "trimmed-mean": trimmed_mean.aggregate,
    "median": median.aggregate,
    "krum": krum.aggregate,
}
RULE_NAMES = (FEDAVG, *RULES)


def check_rule(name: str) -> str:
    """``name`` when it is a known rule, else a ValueError listing them."""
    if name not in RULE_NAMES:
        raise ValueError(f"unknown aggregation rule {name!r}; known: {', '.join(RULE_NAMES)}")
    return name


def aggregate(name: str, rows: Rows, params: RuleParams) -> Robust:
    """Apply the robust rule ``name`` to ``rows`` (at least one)."""
    if name not in RULES:
        raise ValueError(f"{name!r} is not a robust rule; known: {', '.join(RULES)}")
    if len(rows) == 0:
        raise ValueError("no updates to aggregate")
    return RULES[name](rows, params)


def robust_sum(acc: WeightedSum, delta: np.ndarray) -> WeightedSum:
    """A copy of ``acc`` (same n, k, loss) whose ``total / n`` is ``delta``."""
    out = WeightedSum(acc.size)
    out.total = np.asarray(delta, dtype=np.float64) * acc.n
    out.n, out.k, out.loss_sum = acc.n, acc.k, acc.loss_sum
    return out


__all__ = [
    "BLOCK_FLOATS",
    "FEDAVG",
    "RULES",
    "RULE_NAMES",
    "Robust",
    "RuleParams",
    "Rows",
    "aggregate",
    "capped_n",
    "check_rule",
    "robust_sum",
]
