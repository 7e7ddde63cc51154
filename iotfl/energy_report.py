"""The ``energy`` section of ``iotfl demo``'s report: joules per round by kind, devices alive, fleet lifetime and the
energy each point of accuracy cost (with energy accounting, ``--energy-policy naive|aware``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console

from device_sim.report import ENERGY_KINDS
from flcore.datasets import Dataset
from flcore.model import ModelSpec

if TYPE_CHECKING:
    from iotfl.demo_settings import DemoSettings

# The fleet's lifetime ends at the first round after which fewer than this share of its devices is alive.
ALIVE_SHARE = 0.8
# A demo with energy accounting ends as stalled after this many cloud round timeouts without a closed round.
STALL_TIMEOUTS = 3


class Stall:
    """A fleet that ran out of energy stalls the run: no device trains, no gateway posts an aggregate, and the cloud
    extends its round for ever (simulated time only moves with rounds, so nothing recharges either). With energy
    accounting the demo ends after ``STALL_TIMEOUTS`` cloud round timeouts without a round closing."""

    def __init__(self, settings: DemoSettings) -> None:
        cloud_timeout = settings.round_timeout * settings.gateway_rounds + 10
        self.after = None if settings.energy_policy == "off" else STALL_TIMEOUTS * cloud_timeout
        self._closed, self._since = -1, time.monotonic()

    def check(self, closed: int) -> bool:
        """True when ``closed`` (rounds closed so far) has not moved for too long."""
        now = time.monotonic()
        if closed != self._closed:
            self._closed, self._since = closed, now
        return self.after is not None and now - self._since > self.after


def energy_section(
    fleet_energy: dict[str, Any],
    devices: int,
    rounds: list[dict[str, Any]],
    total_rounds: int,
    initial: float,
    stalled_at: int | None = None,
) -> dict[str, Any]:
    """From the fleet report's ``energy`` (``by_round``: joules by kind and ``alive``), the fleet's ``devices``, the
    demo's ``rounds`` (their accuracy), the run's ``total_rounds``, the ``initial`` model's accuracy and the round
    at which the run stalled, if it did (the fleet's lifetime ends there at the latest)."""
    by_round = sorted((int(r), row) for r, row in fleet_energy["by_round"].items())
    table = [
        {
            "round": r,
            **{k: round(row[k], 4) for k in ENERGY_KINDS},
            "total": round(sum(row[k] for k in ENERGY_KINDS), 4),
            "alive": row["alive"],
        }
        for r, row in by_round
    ]
    short = [row["round"] for row in table if row["alive"] < ALIVE_SHARE * devices]
    if stalled_at is not None:
        short = sorted([*short, stalled_at])
    total = sum(row["total"] for row in table)
    final = rounds[-1]["accuracy"] if rounds and rounds[-1]["accuracy"] is not None else None
    gained = None if final is None else (final - initial) * 100
    return {
        "devices": devices,
        "rounds": table,
        "joules_total": round(total, 3),
        "joules_by_kind": {k: round(sum(row[k] for row in table), 3) for k in ENERGY_KINDS},
        "alive_final": table[-1]["alive"] if table else devices,
        "lifetime_rounds": short[0] if short else f"> {total_rounds}",
        "initial_accuracy": initial,
        "accuracy_points_gained": None if gained is None else round(gained, 2),
        "joules_per_accuracy_point": round(total / gained, 3) if gained is not None and gained > 0 else None,
        "stalled_at": stalled_at,
        "died": fleet_energy.get("died", {}),
    }


def demo_energy(
    fleet: dict[str, Any],
    dataset: Dataset,
    rounds: list[dict[str, Any]],
    settings: DemoSettings,
    stalled_at: int | None = None,
) -> dict[str, Any]:
    """``energy_section`` of a demo's fleet report, measured against the cloud's initial model (version 0 is
    ``ModelSpec.init(seed)``)."""
    spec = ModelSpec(dataset.layers)
    initial, _ = spec.evaluate(spec.init(settings.seed), dataset.x_test, dataset.y_test)
    devices = len(fleet["per_device"])
    return energy_section(fleet["energy"], devices, rounds, settings.rounds, initial, stalled_at)


def print_energy(energy: dict[str, Any], console: Console) -> None:
    kinds = energy["joules_by_kind"]
    per_point = energy["joules_per_accuracy_point"]
    console.print(
        f"energy: {energy['joules_total']:,.1f} J (tx {kinds['tx']:,.1f}, rx {kinds['rx']:,.1f}, compute "
        f"{kinds['compute']:,.1f}, idle {kinds['idle']:,.1f}) · alive at the end {energy['alive_final']} of "
        f"{energy['devices']} · fleet lifetime {energy['lifetime_rounds']} rounds · "
        + (f"{per_point:,.2f} J per accuracy point" if per_point is not None else "no accuracy gained")
    )
    if energy["stalled_at"] is not None:
        console.print(
            f"[bold red]stalled at round {energy['stalled_at']}[/]: no device could train, so no round closed "
            "(the cloud extends a round without aggregates)"
        )


__all__ = ["ALIVE_SHARE", "STALL_TIMEOUTS", "Stall", "demo_energy", "energy_section", "print_energy"]
