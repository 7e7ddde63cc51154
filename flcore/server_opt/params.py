"""The server optimizers' hyper-parameters, validated in one place (the cloud's and the demo's settings)."""

from __future__ import annotations

import math
from dataclasses import dataclass

FEDAVG = "fedavg"

# The server learning rate η when none is given: FedAvg's 1.0 is plain averaging. The others were picked on digits
# (20 devices, α = 0.5, half selected per round, 15 rounds; docs/learning.md). FedAvgM's momentum sums about
# 1 / (1 − β) rounds of deltas, so it needs η < 1: 0.5 led at β = 0.9. The adaptive ones step about η per
# coordinate whatever the delta's size (m / √v ≈ ±1 on the first round): 0.05 led there, 0.01 learned slower
# and 0.003 barely moved.
DEFAULT_LR: dict[str, float] = {FEDAVG: 1.0, "fedavgm": 0.5, "fedadam": 0.05, "fedyogi": 0.05}
OPT_NAMES = tuple(DEFAULT_LR)


def check_name(name: str) -> str:
    """``name`` when it is a known server optimizer, else a ValueError listing them."""
    if name not in DEFAULT_LR:
        raise ValueError(f"unknown server optimizer {name!r}; known: {', '.join(OPT_NAMES)}")
    return name


@dataclass(frozen=True)
class OptParams:
    """``name`` of the optimizer; ``lr`` the server learning rate η (None = ``DEFAULT_LR[name]``); ``momentum`` β
    (FedAvgM) or β1 (FedAdam, FedYogi); ``beta2`` β2 and ``eps`` τ of the adaptive ones (Reddi et al. 2021)."""

    name: str = FEDAVG
    lr: float | None = None
    momentum: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-3

    def __post_init__(self) -> None:
        check_name(self.name)
        check = {
            "lr": (self.lr, self.lr is None or 0.0 < self.lr < math.inf, "a finite number > 0 (or none: default)"),
            "momentum": (self.momentum, 0.0 <= self.momentum < 1.0, "in [0, 1)"),
            "beta2": (self.beta2, 0.0 <= self.beta2 < 1.0, "in [0, 1)"),
            "eps": (self.eps, 0.0 < self.eps < math.inf, "a finite number > 0"),
        }
        for field, (value, ok, want) in check.items():
            if value is None and field == "lr":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not ok:
                raise ValueError(f"server_{field} must be {want}, got {value!r}")

    @property
    def eta(self) -> float:
        """The server learning rate in use: the given one or the optimizer's default."""
        return DEFAULT_LR[self.name] if self.lr is None else float(self.lr)


__all__ = ["DEFAULT_LR", "FEDAVG", "OPT_NAMES", "OptParams", "check_name"]
