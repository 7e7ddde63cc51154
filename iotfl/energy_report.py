"""The ``energy`` section of ``iotfl demo``'s report: joules per round by kind, devices alive, fleet lifetime and the
energy each point of accuracy cost (with energy accounting, ``--energy-policy naive|aware``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from device_sim.report import ENERGY_KINDS
from flcore.datasets import Dataset
from flcore.model import ModelSpec

# The fleet's lifetime ends at the first round after which fewer than this share of its devices is alive.
ALIVE_SHARE = 0.8


def energy_section(
    fleet_energy: dict[str, Any], devices: int, rounds: list[dict[str, Any]], total_rounds: int, initial: float
) -> dict[str, Any]:
    """From the fleet report's ``energy`` (``by_round``: joules by kind and ``alive``), the fleet's ``devices``, the
    demo's ``rounds`` (their accuracy), the run's ``total_rounds`` and the ``initial`` model's accuracy."""
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
        "died": fleet_energy.get("died", {}),
    }


def demo_energy(
    fleet: dict[str, Any], dataset: Dataset, rounds: list[dict[str, Any]], total_rounds: int, seed: int
) -> dict[str, Any]:
    """``energy_section`` of a demo's fleet report, measured against the cloud's initial model (version 0 is
    ``ModelSpec.init(seed)``)."""
    spec = ModelSpec(dataset.layers)
    initial, _ = spec.evaluate(spec.init(seed), dataset.x_test, dataset.y_test)
    return energy_section(fleet["energy"], len(fleet["per_device"]), rounds, total_rounds, initial)


def print_energy(energy: dict[str, Any], console: Console) -> None:
    kinds = energy["joules_by_kind"]
    per_point = energy["joules_per_accuracy_point"]
    console.print(
        f"energy: {energy['joules_total']:,.1f} J (tx {kinds['tx']:,.1f}, rx {kinds['rx']:,.1f}, compute "
        f"{kinds['compute']:,.1f}, idle {kinds['idle']:,.1f}) · alive at the end {energy['alive_final']} of "
        f"{energy['devices']} · fleet lifetime {energy['lifetime_rounds']} rounds · "
        + (f"{per_point:,.2f} J per accuracy point" if per_point is not None else "no accuracy gained")
    )


__all__ = ["ALIVE_SHARE", "demo_energy", "energy_section", "print_energy"]
