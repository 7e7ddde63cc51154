"""Energy accounting of a simulated battery, the naive and aware selection policies, and death at 0 (pure)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from device_sim.battery import Battery, BatteryModel
from device_sim.policy import AWARE_FULL, aware_trains, battery_allows, decide_task, skip_state
from device_sim.update import make_up, spend_and_seal
from flcore.encodings import encode
from flcore.energy import EnergyModel, RoundEnergy, sleeping_round, training_round
from flcore.messages import Task
from flcore.model import ModelSpec

SENSORS = ModelSpec((10, 16, 5))
STORE = EnergyModel(capacity_j=10.0, round_s=3600)  # a small store: 10 J


def _model(**kw: object) -> BatteryModel:
    args: dict[str, object] = dict(energy=STORE, recharge=0.0, profile="trickle", floor=0.10)
    args.update(kw)
    return BatteryModel(**args)  # type: ignore[arg-type]


def _task(round: int = 1) -> Task:
    w = SENSORS.init(0)
    return Task(
        round=round,
        base=0,
        layers=SENSORS.layers,
        w=w,
        lr=0.05,
        epochs=2,
        batch=8,
        chunk=64,
        deadline=0.0,
        min_battery=0.0,
    )


def test_drain_is_joules_over_capacity_and_recorded_by_kind() -> None:
    b = Battery(_model(), level=0.5)
    assert b.drain(RoundEnergy(tx=0.5, rx=1.0, compute=0.25, idle=0.25))
    assert b.level == pytest.approx(0.5 - 2.0 / 10.0)
    assert b.take_spent() == RoundEnergy(0.5, 1.0, 0.25, 0.25)
    assert b.take_spent() == RoundEnergy()


def test_dies_at_zero_for_good() -> None:
    b = Battery(_model(recharge=0.5), level=0.15)
    assert not b.drain(RoundEnergy(compute=3.0))  # needs 30 % of the store, holds 15 %
    assert b.dead and b.level == 0.0
    assert b.take_spent().compute == pytest.approx(1.5)  # only what was left was spent
    assert b.recharge(1) == 0.0 and b.level == 0.0  # no recharge once dead
    assert not b.drain(RoundEnergy(idle=0.1))
    assert decide_task(_task(), ram_class="class2", battery=b, duty=1.0, dev="d0", seed=0) == "dead"
    assert skip_state("dead") == "offline"


def test_spend_round_and_skip_in_both_modes() -> None:
    e = Battery(_model(), level=1.0)
    assert e.spend_round(SENSORS, samples=50, epochs=2, rx_bytes=1200, tx_bytes=400)
    cost = training_round(STORE, SENSORS, 50, 2, 1200, 400)
    assert e.level == pytest.approx(1.0 - cost.total / 10.0)
    e.spend_skip()
    assert e.level == pytest.approx(1.0 - (cost.total + sleeping_round(STORE).total) / 10.0)
    f = Battery(BatteryModel(recharge=0.0), level=1.0)  # no energy model: the fractions, as before
    assert f.spend_round(SENSORS, 50, 2, 1200, 400)
    f.spend_skip()
    assert f.level == pytest.approx(1.0 - 0.05 - 0.002 - 0.002)


def test_solar_nights_and_mean_recharge() -> None:
    m = _model(profile="solar", period=4, recharge=0.1)
    assert [m.recharge_at(r) > 1e-9 for r in range(4)] == [False, True, False, False]  # sin(π) is 1e-16
    assert m.rounds_to_recharge(1) == 3  # rounds 2, 3, 4 dark; 5 sunny
    assert m.rounds_to_recharge(4) == 0
    assert m.mean_recharge == 0.1
    assert _model(profile="none").rounds_to_recharge(7) == 4 * 3  # the period (12): nothing ever comes
    assert _model(profile="none").mean_recharge == 0.0


def test_aware_keeps_a_reserve_for_the_night() -> None:
    kw = dict(cost=0.1, idle=0.01, recharge=0.05, floor=0.1)
    assert not aware_trains(level=0.25, dark=5, u=0.0, **kw)  # after 0.15 < reserve 0.1 + 6 × 0.01
    assert aware_trains(level=0.30, dark=5, u=0.0, **kw)  # after 0.20 >= 0.16
    assert not aware_trains(level=0.20, dark=0, u=0.0, **kw)  # after 0.10 < 0.11
    assert aware_trains(level=AWARE_FULL + 0.1, dark=5, u=0.999, **kw)  # nearly full: always


def test_aware_throttles_to_the_recharge() -> None:
    kw = dict(cost=0.1, idle=0.01, recharge=0.05, floor=0.1, dark=0)
    # Just above the reserve 0.11 (after = 0.12): p = max((0.05 - 0.01) / 0.1, 0.01 / 0.79) = 0.4.
    assert aware_trains(level=0.22, u=0.39, **kw)
    assert not aware_trains(level=0.22, u=0.41, **kw)
    # Halfway to AWARE_FULL the headroom wins: p = 0.5.
    half = 0.11 + (AWARE_FULL - 0.11) / 2
    assert aware_trains(level=half + 0.1, u=0.49, **kw)
    assert not aware_trains(level=half + 0.1, u=0.51, **kw)


def test_naive_trains_at_ten_percent_even_when_it_kills() -> None:
    cost = RoundEnergy(compute=2.0)  # 20 % of the store
    low = Battery(_model(policy="naive"), level=0.12)
    assert battery_allows(low, 0.0, cost, dev="d0", round=1, sub=0, seed=0)
    assert not battery_allows(Battery(_model(policy="naive"), level=0.09), 0.0, cost, dev="d0", round=1, sub=0, seed=0)
    assert not battery_allows(Battery(_model(), level=0.12), 0.0, cost, dev="d0", round=1, sub=0, seed=0)


def test_fraction_rule_unchanged_without_energy_model() -> None:
    b = Battery(BatteryModel(), level=0.16)
    assert battery_allows(b, 0.0, None, dev="d0", round=1, sub=0, seed=0)
    assert not battery_allows(Battery(BatteryModel(), level=0.15), 0.0, None, dev="d0", round=1, sub=0, seed=0)


def test_spend_and_seal_charges_the_bytes_sent_and_reports_the_level_after() -> None:
    task = _task()
    body, _ = encode(np.full(SENSORS.param_count, 0.01, np.float32), "int8", task.chunk, 0.05, None)
    make = partial(make_up, "d0001", task, 50, 0.5, 1, body, train_ms=3, ram="class2", fw="t")
    b = Battery(_model(), level=1.0)
    sealed = spend_and_seal(b, task, 50, 1500, make, None)
    assert sealed is not None
    up, payload = sealed
    cost = training_round(STORE, SENSORS, 50, task.epochs, 1500, len(payload))
    assert b.level == pytest.approx(1.0 - cost.total / 10.0)
    assert up.meta["battery"] == round(b.level, 4)
    dying = Battery(_model(), level=0.01)
    assert spend_and_seal(dying, task, 50, 1500, make, None) is None and dying.dead
