"""RAM classes that follow the data (``--ram-follows-data``): the devices that mostly see the lowest labels get the
least RAM, with the same class counts as the random placement."""

from __future__ import annotations

from collections import Counter

import numpy as np

from device_sim.population import build_population, by_dominant_label
from device_sim.settings import FleetSettings


def test_classes_go_out_by_dominant_label_smallest_first() -> None:
    y = np.array([2, 2, 0, 0, 1, 1, 0, 2])
    shards = [np.array([0, 1]), np.array([2, 3, 6]), np.array([4, 5]), np.array([7])]  # dominant 2, 0, 1, 2
    out = by_dominant_label(["class2", "class1", "constrained", "class2"], shards, y)
    assert out == ["class2", "class1", "class2", "constrained"]


def test_the_fleet_keeps_its_mix_and_its_small_devices_share_labels() -> None:
    y = np.repeat(np.arange(6), 100)
    mix = {"class1": 0.4, "class2": 0.6}
    random = build_population(FleetSettings(devices=50, gateways=2, alpha=0.1, seed=3, ram_mix=mix), y)
    follows = build_population(
        FleetSettings(devices=50, gateways=2, alpha=0.1, seed=3, ram_mix=mix, ram_follows_data=True), y
    )
    assert Counter(p.ram_class for p in random) == Counter(p.ram_class for p in follows) == {"class2": 30, "class1": 20}
    assert [p.indices.tolist() for p in random] == [p.indices.tolist() for p in follows]  # same data, other classes

    def dominant(profiles: list, ram: str) -> set[int]:
        return {int(np.bincount(y[p.indices], minlength=6).argmax()) for p in profiles if p.ram_class == ram}

    # by data, the small devices' labels all sit at or below the large ones'; at random they are spread over more
    assert max(dominant(follows, "class1")) <= min(dominant(follows, "class2"))
    assert len(dominant(follows, "class1")) < len(dominant(random, "class1"))
