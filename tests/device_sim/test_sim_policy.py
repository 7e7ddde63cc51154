"""The decision rule: RAM class, then select, then duty cycle, then charge to spare."""

from __future__ import annotations

from typing import Any

import pytest

from device_sim.battery import Battery, BatteryModel
from device_sim.policy import awake, decide, draw, selected, shuffle_seed
from flcore.model import ModelSpec

DIGITS = ModelSpec((64, 32, 10))
SENSORS = ModelSpec((10, 16, 5))


def _decide(**kw: Any) -> str | None:
    args: dict[str, Any] = dict(
        spec=DIGITS,
        batch=8,
        ram_class="class2",
        battery=Battery(BatteryModel(), 0.9),
        min_battery=0.1,
        select=None,
        duty=1.0,
        dev="d0001",
        round=1,
        sub=0,
        seed=0,
    )
    args.update(kw)
    return decide(**args)


def test_trains_when_everything_fits() -> None:
    assert _decide() is None


@pytest.mark.parametrize(
    ("ram_class", "spec", "expected"),
    [
        ("class0", SENSORS, "ram"),
        ("class1", DIGITS, "ram"),
        ("class1", SENSORS, None),
        ("class2", DIGITS, None),
        ("constrained", DIGITS, None),
    ],
)
def test_ram_class(ram_class: str, spec: ModelSpec, expected: str | None) -> None:
    assert _decide(ram_class=ram_class, spec=spec) == expected


def test_battery_needs_charge_to_spare() -> None:
    model = BatteryModel(train_cost=0.05, message_cost=0.002, floor=0.1)
    assert _decide(battery=Battery(model, 0.25), min_battery=0.2) == "battery"
    assert _decide(battery=Battery(model, 0.26), min_battery=0.1) is None
    assert _decide(battery=Battery(model, 0.15), min_battery=0.0) == "battery"  # the floor still holds
    assert _decide(battery=Battery(BatteryModel(enabled=False), 0.01), min_battery=0.5) is None


def test_reasons_are_checked_in_order() -> None:
    low = Battery(BatteryModel(), 0.0)
    assert _decide(ram_class="class0", battery=low, select=[], duty=0.0) == "ram"
    assert _decide(battery=low, select=[], duty=0.0) == "select"
    assert _decide(battery=low, duty=0.0) == "duty"
    assert _decide(battery=low) == "battery"


def test_select_list_and_fraction() -> None:
    assert selected(["d0001", "d0002"], "d0001", 1, 0, 0)
    assert not selected(["d0002"], "d0001", 1, 0, 0)
    assert selected(None, "d0001", 1, 0, 0)
    assert selected(1.0, "d0001", 1, 0, 0) and not selected(0.0, "d0001", 1, 0, 0)
    share = sum(selected(0.3, f"d{i:04d}", 4, 0, 0) for i in range(2000)) / 2000
    assert share == pytest.approx(0.3, abs=0.04)


def test_duty_cycle_share_and_stability() -> None:
    share = sum(awake(0.25, "d0007", r, 0, 0) for r in range(1, 2001)) / 2000
    assert share == pytest.approx(0.25, abs=0.04)
    assert all(awake(1.0, "d0007", r, 0, 0) for r in range(50))
    assert [awake(0.5, "d0001", r, 0, 3) for r in range(20)] == [awake(0.5, "d0001", r, 0, 3) for r in range(20)]


def test_draws_are_stable_and_independent() -> None:
    assert draw(0, "d0001", 1, 0, "x") == draw(0, "d0001", 1, 0, "x")
    assert len({draw(0, "d0001", 1, s, "x") for s in range(3)} | {draw(1, "d0001", 1, 0, "x")}) == 4
    assert 0 <= shuffle_seed(0, "d0001", 2, 1) < 2**31
