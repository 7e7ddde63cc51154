"""Battery model of a simulated device: drain per training and per message, a recharge profile, a reserve floor.

Levels are fractions of a full charge (0..1). The published reference drains 5 % per training down to a 10 % floor
with no recharge, so after a few rounds no device can train and learning stops. Here two things keep a fleet
learning: a device trains only with *charge to spare* (its level covers the task's ``min_battery`` — never less
than the floor — plus the cost of this round), and a recharge profile (a solar panel or a trickle charger) refills
it between rounds, so in steady state each device trains about ``recharge / cost`` of the rounds.

With an energy model (``BatteryModel.energy``, ``flcore.energy``) the drain is in joules instead of fixed fractions:
a round the device trains in costs its radio time (the bytes it actually received and sent), its multiply-accumulates
and its sleep; a round it sleeps through costs only the sleep. Recharge stays a fraction of the store per round (the
same trickle and solar profiles). A device whose store runs out is dead for good: it neither recharges nor trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from flcore.energy import EnergyModel, RoundEnergy, sleeping_round, training_round
from flcore.model import ModelSpec

Profile = Literal["none", "trickle", "solar"]
EnergyPolicy = Literal["naive", "aware"]
ENERGY_POLICIES: tuple[EnergyPolicy, ...] = ("naive", "aware")
NO_CHARGE = 1e-9  # a gain below this is none (the solar profile's sin(π) is 1e-16, not 0)


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
    energy: EnergyModel | None = None  # None: the fraction costs above; else joules from flcore.energy
    policy: EnergyPolicy = "aware"  # with ``energy``: when a device trains (device_sim.policy)

    def __post_init__(self) -> None:
        for name in ("train_cost", "message_cost", "floor", "recharge"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in 0..1, got {value}")
        if self.profile not in ("none", "trickle", "solar"):
            raise ValueError(f"profile must be none, trickle or solar, got {self.profile!r}")
        if self.period < 1:
            raise ValueError(f"period must be >= 1 round, got {self.period}")
        if self.policy not in ENERGY_POLICIES:
            raise ValueError(f"policy must be naive or aware, got {self.policy!r}")

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

    @property
    def mean_recharge(self) -> float:
        """Charge gained per round on average (the solar profile's day and night keep the trickle's mean)."""
        return 0.0 if not self.enabled or self.profile == "none" else self.recharge

    def rounds_to_recharge(self, round: int) -> int:
        """Rounds after ``round`` without any charge before the next that brings some (a night of the solar
        profile); a whole ``period`` when nothing ever recharges."""
        if self.mean_recharge <= 0:
            return self.period
        dark = 0
        while dark < self.period and self.recharge_at(round + 1 + dark) <= NO_CHARGE:
            dark += 1
        return dark

    def fraction(self, cost: RoundEnergy) -> float:
        """The share of a full store that ``cost`` takes (energy mode)."""
        return 0.0 if self.energy is None else cost.total / self.energy.capacity_j

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
        self.dead = False
        self._spent = RoundEnergy()  # joules since the last ``take_spent`` (energy mode)

    @property
    def energy(self) -> EnergyModel | None:
        """The energy model when joules are accounted (and the battery is on)."""
        return self.model.energy if self.model.enabled else None

    def _set(self, level: float) -> None:
        if self.model.enabled and not self.dead:
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

    def spend_message(self, nbytes: int = 0) -> None:
        """One message sent outside a round's accounting (a skip status, a re-send of ``nbytes``)."""
        energy = self.energy
        if energy is None:
            self._set(self.level - self.model.message_cost)
        elif nbytes:
            self.drain(RoundEnergy(tx=energy.tx_joules(nbytes)))

    def spend_skip(self) -> None:
        """A round without training: the skip status (fraction mode) or a round asleep (energy mode)."""
        energy = self.energy
        if energy is None:
            self.spend_message()
        else:
            self.drain(sleeping_round(energy))

    def spend_round(self, spec: ModelSpec, samples: int, epochs: int, rx_bytes: int, tx_bytes: int) -> bool:
        """A round of training that received ``rx_bytes`` and sends ``tx_bytes``; False when the store ran out
        before the update could go out (the device is dead then)."""
        energy = self.energy
        if energy is None:
            self.spend_training()
            self.spend_message()
            return True
        return self.drain(training_round(energy, spec, samples, epochs, rx_bytes, tx_bytes))

    def drain(self, cost: RoundEnergy) -> bool:
        """Take ``cost`` from the store (energy mode); False, and dead at 0, when the store held less."""
        if self.energy is None or self.dead:
            return not self.dead
        need = self.model.fraction(cost)
        if need >= self.level:
            # Only what was left was spent: the device browned out part-way.
            share = self.level / need if need > 0 else 0.0
            self._spent = self._spent + RoundEnergy(*(share * v for v in (cost.tx, cost.rx, cost.compute, cost.idle)))
            self.level, self.dead = 0.0, True
            return False
        self._spent = self._spent + cost
        self.level = min(1.0, self.level - need)
        return True

    def take_spent(self) -> RoundEnergy:
        """The joules spent since the last call."""
        spent, self._spent = self._spent, RoundEnergy()
        return spent


__all__ = ["ENERGY_POLICIES", "Battery", "BatteryModel", "EnergyPolicy", "Profile"]
