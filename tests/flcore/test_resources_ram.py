"""Which RAM class can train the project's models (parameters + gradients + one batch of activations)."""

from __future__ import annotations

import pytest

from flcore.model import ModelSpec
from flcore.resources import RAM_CLASSES, can_train

DIGITS = ModelSpec((64, 32, 10))  # P = 2410
SENSORS = ModelSpec((10, 16, 5))  # P = 261


@pytest.mark.parametrize(
    "spec,batch,expected",
    [
        # sensors: 2,336 bytes at batch 1, 10,024 at batch 32, 10,272 at batch 33 (class1 holds 10,240)
        (SENSORS, 1, {"class0": False, "class1": True, "class2": True, "constrained": True}),
        (SENSORS, 32, {"class0": False, "class1": True, "class2": True, "constrained": True}),
        (SENSORS, 33, {"class0": False, "class1": False, "class2": True, "constrained": True}),
        # digits: 20,128 bytes at batch 1, 46,416 at batch 32, 73,552 at batch 64
        (DIGITS, 1, {"class0": False, "class1": False, "class2": True, "constrained": True}),
        (DIGITS, 32, {"class0": False, "class1": False, "class2": True, "constrained": True}),
        (DIGITS, 64, {"class0": False, "class1": False, "class2": False, "constrained": True}),
    ],
)
def test_can_train_per_class(spec: ModelSpec, batch: int, expected: dict[str, bool]) -> None:
    assert {c: can_train(spec, c, batch) for c in RAM_CLASSES} == expected


def test_footprints_behind_the_table() -> None:
    assert [SENSORS.footprint_bytes(b) for b in (1, 32, 33)] == [2336, 10024, 10272]
    assert [DIGITS.footprint_bytes(b) for b in (1, 32, 64)] == [20128, 46416, 73552]
    assert RAM_CLASSES["class1"] == 10240 and RAM_CLASSES["class2"] == 51200


def test_unknown_class_raises() -> None:
    with pytest.raises(ValueError, match="unknown RAM class 'class9'"):
        can_train(SENSORS, "class9", 1)
