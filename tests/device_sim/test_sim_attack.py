"""Poisoning attackers of the simulator: the spec, who attacks, and what an attacker sends or trains on."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from device_sim.attack import Attack, parse_attack
from device_sim.fleet import trainers
from device_sim.population import build_population
from device_sim.settings import FleetSettings
from iotfl.datasets import load


def test_parse_and_print() -> None:
    assert parse_attack("sign-flip:20%") == Attack("sign-flip", 0.2)
    assert parse_attack(" scale10:0.1 ") == Attack("scale10", 0.1)
    assert str(parse_attack("label-flip:10%")) == "label-flip:10%"
    for bad, why in [
        ("flip:20%", "KIND one of"),
        ("sign-flip", "KIND:PCT"),
        ("scale10:0", "share"),
        ("scale10:20", "share"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_attack(bad)
    assert FleetSettings(attack="scale10:0.2").attack == "scale10:20%"
    with pytest.raises(ValidationError, match="KIND:PCT"):
        FleetSettings(attack="noise:20%")


def test_attackers_are_drawn_from_the_seed_among_devices_that_can_train() -> None:
    data = load("digits", 0)
    profiles = build_population(FleetSettings(devices=50, seed=0), data.y_train)
    able = trainers(profiles, data)
    assert 0 < len(able) < 50  # class0 / class1 devices cannot train the digits MLP
    attack = parse_attack("sign-flip:20%")
    chosen = attack.choose(able, 50, seed=0)
    assert len(chosen) == 10 and chosen <= set(able)
    assert chosen == attack.choose(able, 50, seed=0) != attack.choose(able, 50, seed=1)
    assert len(parse_attack("sign-flip:100%").choose(able, 50, seed=0)) == len(able)


def test_what_an_attacker_sends() -> None:
    delta = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    assert parse_attack("sign-flip:10%").poison(delta).tolist() == [-2.0, 4.0, -8.0]
    assert parse_attack("scale10:10%").poison(delta).tolist() == [5.0, -10.0, 20.0]
    flip = parse_attack("label-flip:10%")
    assert flip.poison(delta) is delta
    assert flip.labels(np.array([0, 3, 9]), 10).tolist() == [9, 6, 0]
    # scale10 boosts a malicious update: trained on flipped labels, sent ×10 (not ×10 an honest one)
    assert parse_attack("scale10:10%").labels(np.array([0, 3]), 10).tolist() == [9, 6]
    assert parse_attack("sign-flip:10%").labels(np.array([0, 3]), 10).tolist() == [0, 3]
