"""The round rules of docs/protocol.md as pure functions: what an aggregate's fate is, when a round closes, and
the global FedAvg step. No clock, no database: callers pass ``now`` and the rows' values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from flcore import server_opt
from flcore.fedavg import WeightedSum
from flcore.robust import FEDAVG, Rows, RuleParams, aggregate, robust_sum
from flcore.server_opt import OptParams, OptState

LIVE_FACTOR = 2.0  # a gateway is live while it checked in within LIVE_FACTOR × round_timeout


class Verdict(StrEnum):
    """What the cloud answers to a well-formed aggregate from an authorized gateway."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"
    CARRIED = "carried"
    FUTURE = "future_round"
    BASE_MISMATCH = "base_mismatch"


class Step(StrEnum):
    """What the deadline check does with an open round."""

    WAIT = "wait"
    CLOSE = "close"
    EXTEND = "extend"


def classify(
    *,
    duplicate: bool,
    done: bool,
    round_state: str | None,
    round_base: int | None,
    agg_base: int,
    last_closed: int,
    agg_round: int,
) -> Verdict:
    """The verdict for an aggregate of ``agg_round`` (the checks after decoding, in the protocol's order).

    An aggregate of a round that closed without it (its gateway was cut off past the deadline) still holds updates
    the gateway acknowledged: while rounds remain it is ``CARRIED`` into the open round, staleness-weighted.
    """
    if duplicate:
        return Verdict.DUPLICATE
    if round_state is not None and not done:
        if agg_base != round_base:
            return Verdict.BASE_MISMATCH
        return Verdict.ACCEPTED if round_state == "open" else Verdict.CARRIED
    return Verdict.LATE if agg_round <= last_closed else Verdict.FUTURE


def live_since(now: float, round_timeout: float) -> float:
    """The earliest check-in time that still makes a gateway live."""
    return now - LIVE_FACTOR * round_timeout


def all_reported(reported: Iterable[str], live: Iterable[str], min_gateways: int) -> bool:
    """Every live gateway has posted and at least ``min_gateways`` did."""
    got = set(reported)
    return len(got) >= min_gateways and set(live) <= got


def next_step(
    *,
    now: float,
    deadline: float | None,
    reported: Iterable[str],
    live: Iterable[str],
    min_gateways: int,
    carried: int = 0,
) -> Step:
    """Close when every live gateway reported the round; at the deadline close if anything came in (its own
    aggregates or ``carried`` late ones), else extend."""
    got = set(reported)
    if all_reported(got, live, min_gateways):
        return Step.CLOSE
    if deadline is not None and now >= deadline:
        return Step.CLOSE if got or carried else Step.EXTEND
    return Step.WAIT


@dataclass(frozen=True, eq=False)
class GlobalUpdate:
    """The new global weights, the server optimizer's state after the step, and the round's totals."""

    weights: np.ndarray
    n: int
    k: int
    train_loss: float
    opt_state: OptState


# One gateway aggregate as the round close reads it: (sum, n, k, loss) and optionally its per-parameter ``cover``.
Contribution = tuple[np.ndarray, int, int, float] | tuple[np.ndarray, int, int, float, np.ndarray | None]


def global_update(
    base: np.ndarray,
    sums: Iterable[Contribution],
    opt: OptParams | None = None,
    rule: str = FEDAVG,
    params: RuleParams | None = None,
    state: OptState | None = None,
) -> GlobalUpdate:
    """The server optimizer ``opt`` (None = FedAvg at η = 1) stepped from its ``state`` (None = fresh) with
    Δ = ``Σ sum / Σ n`` over (sum, n, k, loss[, cover]) aggregates, per parameter ``Σ sum / Σ cover`` when some
    carry a ``cover`` (width-sliced updates, flcore.hetero); with a robust ``rule`` Δ is that rule over the
    aggregates' mean deltas instead (``n``, ``k`` and the loss still count all)."""
    acc = WeightedSum(len(base))
    rows = None if rule == FEDAVG else Rows(len(base))
    for total, n, k, loss, *rest in sums:
        cover = rest[0] if rest else None
        acc.add_sum(np.asarray(total, dtype=np.float64), n, k, loss, cover)
        if rows is not None:
            one = WeightedSum(len(base))
            one.add_sum(np.asarray(total, dtype=np.float64), n, k, loss, cover)
            rows.add_float(one.mean(), n)
    if rows is not None and len(rows):
        acc = robust_sum(acc, aggregate(rule, rows, params or RuleParams()).delta)
    weights, opt_state = server_opt.step(opt or OptParams(), base, acc.mean_delta(), state)
    return GlobalUpdate(weights, acc.n, acc.k, acc.mean_loss, opt_state)
