"""What a simulated fleet did: per-device counters and battery levels round by round, as JSON-ready dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_sim.battery import Battery

ENERGY_KINDS = ("tx", "rx", "compute", "idle")


@dataclass
class DeviceReport:
    """What one device did; ``battery_by_round`` maps a round to (level after it, trainings in it); ``updates``
    lists each update sent as ``[round, sub, seq, ack status or None]`` (what the chaos ledger checks)."""

    dev: str
    gw: str
    ram_class: str
    samples: int
    battery: float
    trainings: int = 0
    skips: dict[str, int] = field(default_factory=dict)
    ups: int = 0
    resends: int = 0
    bytes_up: int = 0
    acks: dict[str, int] = field(default_factory=dict)
    unacked: int = 0
    bad_messages: int = 0
    connects: int = 0
    vanished: bool = False
    battery_by_round: dict[int, tuple[float, int]] = field(default_factory=dict)
    updates: list[list[Any]] = field(default_factory=list)
    energy_by_round: dict[int, list[float]] = field(default_factory=dict)  # joules [tx, rx, compute, idle]
    died: int | None = None  # the round in which its store ran out (energy accounting)

    def record_round(self, rnd: int, battery: Battery, trained: bool) -> None:
        """The ``battery`` after round ``rnd`` (its level, and with energy accounting the joules spent and whether
        it died), and one more training in it when ``trained``."""
        level = battery.level
        _, before = self.battery_by_round.get(rnd, (0.0, 0))
        self.battery_by_round[rnd] = (round(level, 4), before + int(trained))
        self.battery = level
        if battery.energy is not None:
            spent = battery.take_spent()
            joules = self.energy_by_round.setdefault(rnd, [0.0, 0.0, 0.0, 0.0])
            for i, value in enumerate((spent.tx, spent.rx, spent.compute, spent.idle)):
                joules[i] += value
            if battery.dead and self.died is None:
                self.died = rnd

    def record_skip(self, reason: str, rnd: int, battery: Battery) -> None:
        """A task of round ``rnd`` declined for ``reason``; ``battery`` as after it."""
        self.skips[reason] = self.skips.get(reason, 0) + 1
        self.record_round(rnd, battery, trained=False)

    def count_send(self, payload: bytes) -> None:
        """One ``up`` published (a first send or a re-send)."""
        self.ups += 1
        self.bytes_up += len(payload)

    def settle(self, seq: int, status: str) -> None:
        """Record the ack status of the update ``seq`` (its first answer)."""
        for entry in reversed(self.updates):
            if entry[2] == seq:
                if entry[3] is None:
                    entry[3] = status
                return

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["battery_by_round"] = {r: {"battery": b, "trained": t} for r, (b, t) in self.battery_by_round.items()}
        return out


@dataclass
class FleetReport:
    """What the fleet did: per-device reports, and the battery levels across the fleet round by round."""

    devices: list[DeviceReport]
    seconds: float
    stopped: bool  # True when ended by ``stop`` or ``run_timeout`` rather than by done=true
    chaos: list[dict[str, Any]] = field(default_factory=list)  # device faults injected, in order
    attackers: list[str] = field(default_factory=list)  # devices sending poisoned updates (settings.attack)
    process: dict[str, float | int] = field(default_factory=dict)  # the fleet process's memory and CPU (usage.py)

    @property
    def bytes_up(self) -> int:
        """MQTT payload bytes of every ``up`` published, re-sends included."""
        return sum(d.bytes_up for d in self.devices)

    @property
    def trainings(self) -> int:
        return sum(d.trainings for d in self.devices)

    @property
    def skips(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.devices:
            for reason, count in d.skips.items():
                out[reason] = out.get(reason, 0) + count
        return dict(sorted(out.items()))

    @property
    def battery_by_round(self) -> dict[int, dict[str, float | int]]:
        """Per round: mean and min battery after the round over the devices that saw it, and trainings."""
        rounds = sorted({r for d in self.devices for r in d.battery_by_round})
        out: dict[int, dict[str, float | int]] = {}
        for r in rounds:
            seen = [d.battery_by_round[r] for d in self.devices if r in d.battery_by_round]
            levels = [level for level, _ in seen]
            out[r] = {
                "mean": round(float(np.mean(levels)), 4),
                "min": round(float(np.min(levels)), 4),
                "trained": sum(t for _, t in seen),
                "devices": len(seen),
            }
        return out

    @property
    def energy_by_round(self) -> dict[int, dict[str, float | int]]:
        """Per round with energy accounting: the fleet's joules by kind and the devices still alive after it."""
        rounds = sorted({r for d in self.devices for r in d.energy_by_round})
        out: dict[int, dict[str, float | int]] = {}
        for r in rounds:
            sums = np.sum([d.energy_by_round.get(r, [0.0] * 4) for d in self.devices], axis=0)
            row: dict[str, float | int] = {k: round(float(v), 4) for k, v in zip(ENERGY_KINDS, sums, strict=True)}
            row["alive"] = sum(d.died is None or d.died > r for d in self.devices)
            out[r] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        energy = self.energy_by_round
        extra: dict[str, Any] = {}
        if energy:
            died = {d.dev: d.died for d in self.devices if d.died is not None}
            extra["energy"] = {"by_round": {str(r): v for r, v in energy.items()}, "died": died}
        return {
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
            "devices": len(self.devices),
            "trainings": self.trainings,
            "skips": self.skips,
            "bytes_up": self.bytes_up,
            "battery_by_round": {str(r): v for r, v in self.battery_by_round.items()},
            "chaos": self.chaos,
            "attackers": sorted(self.attackers),
            "process": self.process,
            **extra,
            "per_device": [
                {
                    "dev": d.dev,
                    "gw": d.gw,
                    "ram_class": d.ram_class,
                    "samples": d.samples,
                    "battery": round(d.battery, 4),
                    "trainings": d.trainings,
                    "skips": d.skips,
                    "ups": d.ups,
                    "resends": d.resends,
                    "bytes_up": d.bytes_up,
                    "acks": d.acks,
                    "unacked": d.unacked,
                    "connects": d.connects,
                    "vanished": d.vanished,
                    "updates": d.updates,
                    "died": d.died,
                }
                for d in self.devices
            ],
        }


__all__ = ["ENERGY_KINDS", "DeviceReport", "FleetReport"]
