"""Which devices a gateway asks to train: a fixed share of its live devices, drawn afresh for every sub-round.

A ``select`` fraction in the task lets each device draw for itself, so the number that trains varies, and a small
gateway is sometimes left with none (it then has nothing to post and the cloud waits for it until the round's
deadline). A gateway that knows its live devices names ``ceil(F × live)`` of them instead, at least one: exactly the
share asked for, the way FedAvg samples clients. The draw is a stable hash of (gateway, round, sub, device), so a
restarted gateway names the same devices again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

# Above this many names the task carries the fraction instead (each id costs the retained task ~10 bytes).
MAX_NAMED = 4096


def _rank(gw: str, round: int, sub: int, dev: str) -> bytes:
    return hashlib.blake2b(f"{gw}:{round}:{sub}:{dev}".encode(), digest_size=8).digest()


def choose(devices: Iterable[str], fraction: float, gw: str, round: int, sub: int) -> list[str]:
    """``ceil(fraction × len(devices))`` of ``devices`` (at least one when there are any), sorted by id."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    pool = sorted(set(devices))
    count = min(len(pool), max(1, math.ceil(fraction * len(pool) - 1e-9)))
    return sorted(sorted(pool, key=lambda dev: _rank(gw, round, sub, dev))[:count])


def task_select(
    fraction: float | None, live: Iterable[str], known: bool, gw: str, round: int, sub: int
) -> list[str] | float | None:
    """The task's ``select``: the devices ``choose`` names when the live devices are ``known`` and not too many,
    else the fraction itself (each device draws), None when every device trains."""
    if fraction is None or fraction >= 1.0:
        return None
    pool = set(live)
    if not known or not pool or math.ceil(fraction * len(pool)) > MAX_NAMED:
        return fraction
    return choose(pool, fraction, gw, round, sub)


__all__ = ["MAX_NAMED", "choose", "task_select"]
