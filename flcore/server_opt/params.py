"""The server optimizers' hyper-parameters, validated in one place (the cloud's and the demo's settings)."""

from __future__ import annotations

import math
from dataclasses import dataclass

FEDAVG = "fedavg"

# η and β (β1) when none is given: FedAvg's η = 1 is plain averaging. The others were tuned on digits (100 devices,
# 20 % per round, 50 rounds, α 0.5 and 0.1, 8 seeds; docs/learning.md "Recommended settings"): with them FedAvgM and
# FedAdam end within a point of centralized training in under half FedAvg's rounds; the textbook β 0.9 with a small
# η was slower than FedAvg itself. FedYogi behaved as FedAdam throughout.
DEFAULT_LR: dict[str, float] = {FEDAVG: 1.0, "fedavgm": 1.5, "fedadam": 0.03, "fedyogi": 0.03}
DEFAULT_MOMENTUM: dict[str, float] = {FEDAVG: 0.0, "fedavgm": 0.7, "fedadam": 0.8, "fedyogi": 0.8}
OPT_NAMES = tuple(DEFAULT_LR)


def check_name(name: str) -> str:
    """``name`` when it is a known server optimizer, else a ValueError listing them."""
    if name not in DEFAULT_LR:
        raise ValueError(f"unknown server optimizer {name!r}; known: {', '.join(OPT_NAMES)}")
    return name


@dataclass(frozen=True)
class OptParams:
    """``name`` of the optimizer; ``lr`` the server learning rate η (None = ``DEFAULT_LR[name]``); ``momentum`` β
    (FedAvgM) or β1 (FedAdam, FedYogi) (None = ``DEFAULT_MOMENTUM[name]``); ``beta2`` β2 and ``eps`` τ of the
    adaptive ones (Reddi et al. 2021)."""

    name: str = FEDAVG
    lr: float | None = None
    momentum: float | None = None
    beta2: float = 0.99
    eps: float = 1e-3

    def __post_init__(self) -> None:
        check_name(self.name)
        check = {
            "lr": (self.lr, self.lr is None or 0.0 < self.lr < math.inf, "a finite number > 0 (or none: default)"),
            "momentum": (self.momentum, self.momentum is None or 0.0 <= self.momentum < 1.0, "in [0, 1)"),
            "beta2": (self.beta2, 0.0 <= self.beta2 < 1.0, "in [0, 1)"),
            "eps": (self.eps, 0.0 < self.eps < math.inf, "a finite number > 0"),
        }
        for field, (value, ok, want) in check.items():
            if value is None and field in ("lr", "momentum"):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not ok:
                raise ValueError(f"server_{field} must be {want}, got {value!r}")

    @property
    def eta(self) -> float:
        """The server learning rate in use: the given one or the optimizer's default."""
        return DEFAULT_LR[self.name] if self.lr is None else float(self.lr)

    @property
    def beta(self) -> float:
        """β of FedAvgM / β1 of FedAdam and FedYogi in use: the given one or the optimizer's default."""
        return DEFAULT_MOMENTUM[self.name] if self.momentum is None else float(self.momentum)


__all__ = ["DEFAULT_LR", "DEFAULT_MOMENTUM", "FEDAVG", "OPT_NAMES", "OptParams", "check_name"]
