"""FedBuff's staleness weights and its buffer: exact numbers on small vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flcore.fedavg import WeightedSum
from flcore.fedbuff import add_stale, staleness_weight


def test_weights_follow_one_over_root_one_plus_staleness() -> None:
    assert [staleness_weight(s) for s in range(4)] == pytest.approx([1.0, 1 / math.sqrt(2), 1 / math.sqrt(3), 0.5])
    assert staleness_weight(3, exponent=1.0) == 0.25
    assert staleness_weight(5, exponent=0.0) == 1.0


def test_weights_decrease_with_staleness() -> None:
    weights = [staleness_weight(s) for s in range(50)]
    assert all(a > b for a, b in zip(weights, weights[1:], strict=False)) and weights[-1] > 0


@pytest.mark.parametrize(("staleness", "exponent"), [(-1, 0.5), (1, -0.5)])
def test_bad_arguments_are_refused(staleness: int, exponent: float) -> None:
    with pytest.raises(ValueError):
        staleness_weight(staleness, exponent)


def test_a_stale_update_is_discounted_in_the_sum_but_its_samples_count_fully() -> None:
    acc = WeightedSum(2)
    acc.add(np.array([1.0, 2.0]), 10, 0.5)  # fresh
    weight = add_stale(acc, np.array([4.0, -2.0]), 30, 1.5, staleness=3)  # 3 rounds behind: weight 1/2
    assert weight == 0.5
    assert acc.total.tolist() == [10 + 0.5 * 30 * 4, 20 - 0.5 * 30 * 2]
    assert (acc.n, acc.k) == (40, 2)
    assert acc.mean_loss == pytest.approx((10 * 0.5 + 30 * 1.5) / 40)
    assert acc.mean_delta().tolist() == pytest.approx([70 / 40, -10 / 40])
