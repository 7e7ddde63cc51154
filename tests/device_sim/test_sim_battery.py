"""Battery numbers: drain per training and message, recharge profiles, the floor and the charge-to-spare rule."""

from __future__ import annotations

import math

import pytest

from device_sim.battery import Battery, BatteryModel


def test_training_and_message_drain() -> None:
    b = Battery(BatteryModel(train_cost=0.05, message_cost=0.002, recharge=0.0), level=0.8)
    b.spend_training()
    b.spend_message()
    assert b.level == pytest.approx(0.748)
    for _ in range(100):
        b.spend_training()
    assert b.level == 0.0  # never negative


def test_charge_to_spare_threshold() -> None:
    model = BatteryModel(train_cost=0.05, message_cost=0.002, floor=0.10)
    assert model.round_cost == pytest.approx(0.052)
    assert model.threshold(0.2) == pytest.approx(0.252)
    assert model.threshold(0.0) == pytest.approx(0.152)  # the floor applies when the task asks for less
    assert model.can_spare(0.152, 0.0)
    assert not model.can_spare(0.151, 0.0)
    assert not model.can_spare(0.25, 0.2)
    assert model.can_spare(0.26, 0.2)


def test_disabled_model_is_always_full() -> None:
    b = Battery(BatteryModel(enabled=False), level=0.2)
    assert b.level == 1.0
    b.spend_training()
    b.spend_message()
    assert b.level == 1.0 and b.can_spare(0.99)
    assert b.model.recharge_at(3) == 0.0


def test_trickle_recharge_is_capped_at_full() -> None:
    b = Battery(BatteryModel(recharge=0.025, profile="trickle"), level=0.5)
    assert b.recharge(1) == pytest.approx(0.025)
    assert b.level == pytest.approx(0.525)
    b.level = 0.99
    assert b.recharge(2) == pytest.approx(0.01)
    assert b.level == 1.0
    assert BatteryModel(profile="none", recharge=0.3).recharge_at(5) == 0.0


def test_solar_profile_day_night_and_mean() -> None:
    model = BatteryModel(recharge=0.02, profile="solar", period=12)
    day = [model.recharge_at(r) for r in range(12)]
    assert day[0] == 0.0 and all(v < 1e-12 for v in day[6:])  # night: sin <= 0
    assert day[3] == pytest.approx(0.02 * math.pi)  # noon
    assert sum(day) / 12 == pytest.approx(0.02, rel=0.03)
    assert model.recharge_at(15) == pytest.approx(day[3])  # the next day repeats


def test_steady_state_share_is_recharge_over_cost() -> None:
    """Training whenever the rule allows settles at about recharge / round cost of the rounds."""
    model = BatteryModel(train_cost=0.05, message_cost=0.002, floor=0.1, recharge=0.025)
    b = Battery(model, level=0.3)
    trained = 0
    for r in range(1, 1001):
        b.recharge(r)
        if b.can_spare(0.1):
            b.spend_training()
            b.spend_message()
            trained += 1 if r > 200 else 0
        else:
            b.spend_message()  # the skip status
    share = trained / 800
    # each round costs a message either way: (0.025 - 0.002) / 0.05 of the rounds can train
    assert share == pytest.approx(0.023 / 0.05, abs=0.01)


def test_model_validation() -> None:
    with pytest.raises(ValueError, match="train_cost"):
        BatteryModel(train_cost=1.5)
    with pytest.raises(ValueError, match="profile"):
        BatteryModel(profile="wind")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        Battery(BatteryModel(), level=1.2)
