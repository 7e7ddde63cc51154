"""The demo report's energy section: joules per round by kind, devices alive, fleet lifetime, joules per point."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from flcore.datasets import sensors
from flcore.model import ModelSpec
from iotfl.demo_settings import DemoSettings
from iotfl.energy_report import Stall, demo_energy, energy_section, print_energy


def _fleet_energy(alive: list[int]) -> dict:
    row = {"tx": 0.5, "rx": 2.0, "compute": 1.0, "idle": 0.5}
    return {"by_round": {str(r): {**row, "alive": a} for r, a in enumerate(alive, 1)}, "died": {"d0003": 2}}


def _rounds(accuracies: list[float]) -> list[dict]:
    return [{"round": r, "accuracy": a} for r, a in enumerate(accuracies, 1)]


def test_section_figures() -> None:
    out = energy_section(_fleet_energy([10, 9, 7, 7]), 10, _rounds([0.3, 0.5, 0.6, 0.7]), 4, initial=0.2)
    assert out["rounds"][0] == {
        "round": 1,
        "tx": 0.5,
        "rx": 2.0,
        "compute": 1.0,
        "idle": 0.5,
        "total": 4.0,
        "alive": 10,
    }
    assert out["joules_total"] == 16.0
    assert out["joules_by_kind"] == {"tx": 2.0, "rx": 8.0, "compute": 4.0, "idle": 2.0}
    assert out["lifetime_rounds"] == 3  # the first round with fewer than 8 of 10 alive
    assert out["alive_final"] == 7 and out["died"] == {"d0003": 2}
    assert out["accuracy_points_gained"] == 50.0
    assert out["joules_per_accuracy_point"] == pytest.approx(16.0 / 50.0)


def test_section_when_the_fleet_outlives_the_run_and_learns_nothing() -> None:
    out = energy_section(_fleet_energy([10, 8]), 10, _rounds([0.2, 0.1]), 2, initial=0.2)
    assert out["lifetime_rounds"] == "> 2"  # 8 of 10 is not fewer than 80 %
    assert out["joules_per_accuracy_point"] is None


def test_a_stall_ends_the_lifetime() -> None:
    out = energy_section(_fleet_energy([10, 10, 10]), 10, _rounds([0.3, 0.4]), 50, initial=0.2, stalled_at=3)
    assert out["lifetime_rounds"] == 3 and out["stalled_at"] == 3
    out = energy_section(_fleet_energy([10, 5, 5]), 10, _rounds([0.3, 0.4]), 50, initial=0.2, stalled_at=3)
    assert out["lifetime_rounds"] == 2  # fewer than 80 % alive came first
    buf = io.StringIO()
    print_energy(out, Console(file=buf, width=200))
    assert "stalled at round 3" in buf.getvalue()


def test_stall_only_with_energy_accounting() -> None:
    assert Stall(DemoSettings()).after is None
    stall = Stall(DemoSettings(energy_policy="aware", round_timeout=3.0))
    assert stall.after == 3 * 13.0  # three cloud round timeouts (round timeout + 10 s)
    stall.after = 0.05
    assert not stall.check(4)
    time.sleep(0.1)
    assert stall.check(4)
    assert not stall.check(5)  # a round closed: the clock starts again


def test_demo_energy_measures_from_the_initial_model_and_prints() -> None:
    data = sensors(0)
    spec = ModelSpec(data.layers)
    initial, _ = spec.evaluate(spec.init(3), data.x_test, data.y_test)
    fleet = {"energy": _fleet_energy([2]), "per_device": [{}, {}]}
    out = demo_energy(fleet, data, _rounds([initial + 0.1]), DemoSettings(rounds=1, seed=3))
    assert out["initial_accuracy"] == initial
    assert out["joules_per_accuracy_point"] == pytest.approx(4.0 / 10.0)
    buf = io.StringIO()
    print_energy(out, Console(file=buf, width=200))
    assert "energy: 4.0 J (tx 0.5, rx 2.0, compute 1.0, idle 0.5)" in buf.getvalue()
    assert "fleet lifetime > 1 rounds" in buf.getvalue() and "0.40 J per accuracy point" in buf.getvalue()
