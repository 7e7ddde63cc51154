"""Joules per round from the ESP32-class constants, worked out by hand."""

from __future__ import annotations

import pytest

from flcore.energy import (
    UP_OVERHEAD_BYTES,
    EnergyModel,
    RoundEnergy,
    forward_macs,
    sleeping_round,
    training_macs,
    training_round,
    up_bytes,
)
from flcore.model import ModelSpec

SENSORS = ModelSpec((10, 16, 5))
DIGITS = ModelSpec((64, 32, 10))


def test_default_constants_are_the_documented_board() -> None:
    e = EnergyModel()
    assert (e.volts, e.tx_amps, e.rx_amps, e.cpu_amps, e.sleep_amps) == (3.3, 0.190, 0.100, 0.068, 10e-6)
    assert e.capacity_j == pytest.approx(13_320.0)  # 1,000 mAh × 3.6 C/mAh × 3.7 V


def test_macs_of_forward_and_training() -> None:
    assert forward_macs(SENSORS) == 10 * 16 + 16 * 5 == 240
    assert forward_macs(DIGITS) == 64 * 32 + 32 * 10 == 2368
    assert training_macs(SENSORS, samples=50, epochs=2) == 3 * 240 * 50 * 2 == 72_000


def test_joules_by_kind() -> None:
    e = EnergyModel()
    assert e.tx_joules(1000) == pytest.approx(0.190 * 3.3 * 8000 / 1e6)  # 5.016 mJ
    assert e.rx_joules(1000) == pytest.approx(0.100 * 3.3 * 8000 / 1e6)  # 2.64 mJ
    assert e.wake_joules() == pytest.approx(0.100 * 3.3 * 1.5)  # 0.495 J
    assert e.compute_joules(72_000) == pytest.approx(0.068 * 3.3 * 0.72)  # 0.161568 J
    assert e.idle_joules() == pytest.approx(10e-6 * 3.3 * 600)  # 19.8 mJ


def test_training_round_adds_up() -> None:
    e = EnergyModel(round_s=3600)
    cost = training_round(e, SENSORS, samples=50, epochs=2, rx_bytes=1200, tx_bytes=400)
    assert cost.tx == pytest.approx(0.190 * 3.3 * 3200 / 1e6)
    assert cost.rx == pytest.approx(0.495 + 0.100 * 3.3 * 9600 / 1e6)
    assert cost.compute == pytest.approx(0.161568)
    assert cost.idle == pytest.approx(10e-6 * 3.3 * 3600)
    assert cost.total == pytest.approx(0.002006 + 0.498168 + 0.161568 + 0.1188)
    assert sleeping_round(e) == RoundEnergy(idle=pytest.approx(0.1188))
    assert (cost + sleeping_round(e)).idle == pytest.approx(2 * 0.1188)


def test_up_bytes_estimate() -> None:
    assert SENSORS.param_count == 261
    assert up_bytes(SENSORS, chunk=64) == 261 + 4 * 5 + UP_OVERHEAD_BYTES


@pytest.mark.parametrize("field", ["volts", "capacity_j", "macs_per_s", "throughput_bps"])
def test_rejects_non_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EnergyModel(**{field: 0.0})


def test_rejects_negative_and_nan() -> None:
    with pytest.raises(ValueError, match="sleep_amps"):
        EnergyModel(sleep_amps=-1e-6)
    with pytest.raises(ValueError, match="round_s"):
        EnergyModel(round_s=float("nan"))
