"""Battery model of a simulated device: drain per training and per message, a recharge profile, a reserve floor.

Levels are fractions of a full charge (0..1). The published reference drains 5 % per training down to a 10 % floor
with no recharge, so after a few rounds no device can train and learning stops. Here two things keep a fleet
learning: a device trains only with *charge to spare* (its level covers the task's ``min_battery`` — never less
than the floor — plus the cost of this round), and a recharge profile (a solar panel or a trickle charger) refills
it between rounds, so in steady state each device trains about ``recharge / cost`` of the rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Profile = Literal["none", "trickle", "solar"]


@dataclass(frozen=True)
class BatteryModel:
    """The energy costs and recharge of one device class; ``enabled=False`` models mains power (always full)."""

    enabled: bool = True
    train_cost: float = 0.05
    message_cost: float = 0.002
    floor: float = 0.10
    recharge: float = 0.025
    profile: Profile = "trickle"
    period: int = 12

    def __post_init__(self) -> None:
        for name in ("train_cost", "message_cost", "floor", "recharge"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in 0..1, got {value}")
        if self.profile not in ("none", "trickle", "solar"):
            raise ValueError(f"profile must be none, trickle or solar, got {self.profile!r}")
        if self.period < 1:
            raise ValueError(f"period must be >= 1 round, got {self.period}")

    @property
    def round_cost(self) -> float:
        """What one training round takes: the training itself and the ``up`` message."""
        return self.train_cost + self.message_cost

    def recharge_at(self, round: int) -> float:
        """Charge gained before task ``round``: constant for a trickle charger; for solar a day of ``period``
        rounds (``π · max(0, sin)`` scaling keeps the mean near ``recharge``) with nothing at night."""
        if not self.enabled or self.profile == "none":
            return 0.0
        if self.profile == "trickle":
            return self.recharge
        return self.recharge * math.pi * max(0.0, math.sin(2.0 * math.pi * (round % self.period) / self.period))

    def threshold(self, min_battery: float) -> float:
        """The lowest level at which a device may train: the task's ``min_battery`` (never below the floor)
        plus the cost of the round."""
        return max(min_battery, self.floor) + self.round_cost

    def can_spare(self, level: float, min_battery: float) -> bool:
        """The *charge to spare* rule: training must not take the battery below ``max(min_battery, floor)``."""
        return not self.enabled or level >= self.threshold(min_battery) - 1e-12


class Battery:
    """One device's charge; not thread-safe (the device serializes access)."""

    def __init__(self, model: BatteryModel, level: float = 1.0):
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"battery level must be in 0..1, got {level}")
        self.model = model
        self.level = level if model.enabled else 1.0

    def _set(self, level: float) -> None:
        if self.model.enabled:
            self.level = min(1.0, max(0.0, level))

    def recharge(self, round: int) -> float:
        """Add the profile's charge for ``round``; returns the gain."""
        before = self.level
        self._set(self.level + self.model.recharge_at(round))
        return self.level - before

    def can_spare(self, min_battery: float) -> bool:
        return self.model.can_spare(self.level, min_battery)

    def spend_training(self) -> None:
        self._set(self.level - self.model.train_cost)

    def spend_message(self) -> None:
        self._set(self.level - self.model.message_cost)


__all__ = ["Battery", "BatteryModel", "Profile"]
