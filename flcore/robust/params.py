"""The robust rules' parameters, validated in one place (settings of the gateway, the cloud and the demo)."""

from __future__ import annotations

import math
from dataclasses import dataclass

FEDAVG = "fedavg"


def covering(fraction: float, k: int) -> int:
    """The fewest whole updates that cover ``fraction`` of ``k``: ⌈fraction × k⌉ (0.3 × 10 is 3, not the 4 its float
    product rounds up to). A rule assuming ``fraction`` hostile must expect 2 attackers among 8 at 0.2, not 1."""
    return math.ceil(round(fraction * k, 9))


@dataclass(frozen=True)
class RuleParams:
    """``clip_norm``: clip's bound C (0 = the median norm of the round's updates); ``trim``: fraction of the k
    updates trimmed at each end by trimmed-mean; ``krum_f``: the fraction of the k updates Multi-Krum assumes hostile
    (both rounded up, ``covering``); ``n_cap``: a mean-based rule (clip, krum) weighs an update by
    ``min(n, n_cap × median n)``."""

    clip_norm: float = 0.0
    trim: float = 0.2
    krum_f: float = 0.2
    n_cap: float = 2.0

    def __post_init__(self) -> None:
        check = {
            "clip_norm": (self.clip_norm, 0.0 <= self.clip_norm < math.inf, "a finite number >= 0 (0 = median norm)"),
            "trim": (self.trim, 0.0 <= self.trim < 0.5, "a fraction in [0, 0.5)"),
            "krum_f": (self.krum_f, 0.0 <= self.krum_f < 0.5, "a fraction of the updates in [0, 0.5)"),
            "n_cap": (self.n_cap, 1.0 <= self.n_cap < math.inf, "a finite number >= 1"),
        }
        for name, (value, ok, want) in check.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not ok:
                raise ValueError(f"{name} must be {want}, got {value!r}")


__all__ = ["FEDAVG", "RuleParams", "covering"]
