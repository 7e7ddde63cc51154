"""The demo report's learning sections: personalization (global vs personal accuracy on the devices' own held-out
samples) and heterogeneous widths (which updates of width-sliced devices the cloud counted)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from rich.console import Console

from flcore.hetero import width_for


def personal_columns(history: dict[str, Any]) -> dict[str, Any]:
    """A round's local accuracies from the cloud's history entry: only when its devices reported them."""
    if history.get("p_devices") is None:
        return {}
    return {key: history[key] for key in ("p_accuracy", "l_accuracy", "p_devices")}


def personalization_section(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Global vs personalized accuracy on the devices' local held-out samples: per round and the last round's."""
    reported = [r for r in rounds if r.get("p_devices")]
    last = reported[-1] if reported else None
    return {
        "per_round": [
            {"round": r["round"], "personalized": r["p_accuracy"], "global": r["l_accuracy"], "devices": r["p_devices"]}
            for r in reported
        ],
        "final_personalized": last["p_accuracy"] if last else None,
        "final_global": last["l_accuracy"] if last else None,
        "gain": last["p_accuracy"] - last["l_accuracy"] if last else None,
    }


def width_section(
    per_device: Iterable[dict[str, Any]], rounds: list[dict[str, Any]], widths: dict[str, float]
) -> dict[str, Any]:
    """Per round, the updates the devices saw accepted, by the width their RAM class trained at, beside the k the
    cloud counted: with nothing lost, the widths add up to k (the sliced devices' updates are in the model)."""
    by_round: dict[int, Counter[str]] = {}
    devices: Counter[str] = Counter()
    for device in per_device:
        width = f"{width_for(widths, device['ram_class']):g}"
        devices[width] += 1
        for rnd, _sub, _seq, status in device["updates"]:
            if status == "accepted":
                by_round.setdefault(int(rnd), Counter())[width] += 1
    per_round = [
        {
            "round": r["round"],
            "k": r["k"],
            "accepted_by_width": dict(sorted(by_round.get(r["round"], Counter()).items())),
        }
        for r in rounds
    ]
    return {
        "widths": widths,
        "devices_by_width": dict(sorted(devices.items())),
        "per_round": per_round,
        "all_counted": all(sum(p["accepted_by_width"].values()) == p["k"] for p in per_round),
    }


def print_learning(report: dict[str, Any], console: Console) -> None:
    """The personalization and width lines of the demo's summary."""
    personal = report.get("personalization")
    if personal and personal["gain"] is not None:
        console.print(
            f"local held-out accuracy, last round: personalized [bold]{personal['final_personalized'] * 100:.1f} %[/]"
            f" vs global {personal['final_global'] * 100:.1f} % ({personal['gain'] * 100:+.1f} points)"
        )
    widths = report.get("widths")
    if widths:
        last: dict[str, Any] = widths["per_round"][-1] if widths["per_round"] else {"k": 0, "accepted_by_width": {}}
        parts = ", ".join(f"{n} at width {w}" for w, n in last["accepted_by_width"].items())
        console.print(
            f"heterogeneous widths {widths['widths']}: devices by width {widths['devices_by_width']}; last round "
            f"k = {last['k']} ({parts}); every round's accepted updates counted: {widths['all_counted']}"
        )


__all__ = ["personal_columns", "personalization_section", "print_learning", "width_section"]
