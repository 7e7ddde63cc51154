"""Fleet composition: ids, gateways, the Dirichlet split, exact RAM-class counts, settings from the environment."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from device_sim.population import build_population, ram_classes
from device_sim.settings import FleetSettings


def test_ram_class_counts_are_exact_largest_remainder() -> None:
    mix = {"class0": 0.04, "class1": 0.06, "class2": 0.60, "constrained": 0.30}
    got = ram_classes(50, mix, np.random.default_rng(0))
    assert {c: got.count(c) for c in mix} == {"class0": 2, "class1": 3, "class2": 30, "constrained": 15}
    assert len(ram_classes(7, {"class2": 1, "constrained": 1}, np.random.default_rng(0))) == 7


def test_population_ids_gateways_shards_and_traits() -> None:
    y = np.repeat(np.arange(10), 30)
    settings = FleetSettings(devices=12, gateways=5, alpha=0.5, seed=3)
    fleet = build_population(settings, y)
    assert [p.dev for p in fleet][:3] == ["d0000", "d0001", "d0002"]
    assert [p.gw for p in fleet][:7] == ["gw0", "gw1", "gw2", "gw3", "gw4", "gw0", "gw1"]
    everything = np.concatenate([p.indices for p in fleet])
    assert len(everything) == len(y) and len(np.unique(everything)) == len(y)  # a partition: no overlap, no loss
    assert all(len(p.indices) >= 2 for p in fleet)
    assert all(0.3 <= p.battery <= 1.0 and -90 <= p.rssi <= -40 for p in fleet)
    again = build_population(settings, y)
    assert [p.ram_class for p in again] == [p.ram_class for p in fleet]
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(again, fleet, strict=True))
    mains = build_population(FleetSettings(devices=12, battery=False), y)
    assert all(p.battery == 1.0 for p in mains)


def test_settings_read_the_environment_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTFL_DEVICES", "7")
    monkeypatch.setenv("IOTFL_RAM_MIX", '{"class2": 1}')
    monkeypatch.setenv("IOTFL_BATTERY", "false")
    monkeypatch.setenv("IOTFL_SOMETHING_ELSE", "ignored")
    s = FleetSettings()
    assert (s.devices, s.ram_mix, s.battery) == (7, {"class2": 1.0}, False)
    assert not s.battery_model().enabled
    with pytest.raises(ValidationError, match="unknown RAM classes"):
        FleetSettings(ram_mix={"class9": 1.0})
    with pytest.raises(ValidationError, match="battery_start"):
        FleetSettings(battery_start=(0.9, 0.2))
    with pytest.raises(ValidationError):
        FleetSettings(fleet="bad/fleet")
