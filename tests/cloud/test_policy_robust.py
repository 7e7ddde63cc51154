"""The cloud's global step through a robust rule: over the gateways' mean deltas, carried weights included."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from cloud.policy import global_update
from cloud.settings import CloudSettings
from flcore.robust import RuleParams

BASE = np.zeros(3, dtype=np.float32)


def sums(means: list[list[float]], ns: list[int]) -> list[tuple[np.ndarray, int, int, float]]:
    return [(n * np.asarray(m, dtype=np.float64), n, 2, 0.5) for m, n in zip(means, ns, strict=True)]


def test_median_over_gateway_means() -> None:
    aggs = sums([[1, 2, 3], [2, 3, 4], [100, -100, 100]], [10, 30, 20])
    update = global_update(BASE, aggs, rule="median", params=RuleParams())
    assert np.allclose(update.weights, [2, 2, 4])
    assert (update.n, update.k, update.train_loss) == (60, 6, 0.5)
    plain = global_update(BASE, aggs)
    assert np.allclose(plain.weights, [(10 + 60 + 2000) / 60, (20 + 90 - 2000) / 60, (30 + 120 + 2000) / 60])


def test_a_carried_aggregate_enters_with_its_weight() -> None:
    # what cloud/rounds.py passes for a late aggregate: weight × its sum, its n counted fully
    w = 0.5
    aggs = [*sums([[2, 2, 2]], [10]), (w * 10 * np.array([4.0, 4.0, 4.0]), 10, 1, 0.5)]
    update = global_update(BASE, aggs, rule="clip", params=RuleParams(clip_norm=100))
    assert np.allclose(update.weights, [2, 2, 2])  # both rows are 2 after the carried one's discount


def test_settings_validate_the_rule() -> None:
    assert CloudSettings(aggregation="trimmed-mean", trim=0.1).rule_params.trim == 0.1
    with pytest.raises(ValidationError, match="unknown aggregation rule"):
        CloudSettings(aggregation="nope")
    with pytest.raises(ValidationError, match="krum_f"):
        CloudSettings(krum_f=0.9)
