"""The gateway's weights across sub-rounds and the sum it reports."""

from __future__ import annotations

import numpy as np

from flcore.fedavg import WeightedSum
from gateway.local_model import LocalModel


def test_one_sub_round_reports_the_devices_sum() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=9).astype(np.float32)
    acc = WeightedSum(9)
    deltas, ns = rng.normal(size=(3, 9)), [4, 10, 6]
    for d, n in zip(deltas, ns, strict=True):
        acc.add(d, n, 0.1)
    model = LocalModel(base)
    model.fold(acc)
    total, cover = model.aggregate_sum(20)
    assert cover is None
    np.testing.assert_allclose(total, (np.array(ns)[:, None] * deltas).sum(0), rtol=1e-6)
    np.testing.assert_allclose(model.weights, base + acc.total / 20, rtol=1e-6)


def test_sub_rounds_accumulate_mean_deltas_and_empty_ones_change_nothing() -> None:
    base = np.zeros(2, np.float32)
    model = LocalModel(base)
    s0, s1 = WeightedSum(2), WeightedSum(2)
    s0.add(np.array([1.0, 0.0]), 1, 0.0)
    s0.add(np.array([0.0, 3.0]), 3, 0.0)
    s1.add(np.array([2.0, 2.0]), 5, 0.0)
    model.fold(s0)
    model.fold(WeightedSum(2))
    model.fold(s1)
    np.testing.assert_allclose(model.weights, [0.25 + 2, 2.25 + 2])
    np.testing.assert_allclose(model.aggregate_sum(10)[0], [22.5, 42.5])
    assert model.weights.dtype == np.float32 and model.aggregate_sum(1)[0].dtype == np.float32


def test_a_sliced_update_moves_only_its_parameters_and_the_sum_carries_their_cover() -> None:
    model = LocalModel(np.zeros(3, np.float32))
    acc = WeightedSum(3)
    acc.add(np.array([1.0, 1.0, 1.0]), 3, 0.0)
    acc.add_sliced(np.array([5.0]), np.array([0]), 1, 0.0)  # a width-sliced device trained parameter 0 only
    model.fold(acc)
    np.testing.assert_allclose(model.weights, [2.0, 1.0, 1.0])  # (3·1 + 1·5) / 4 and 3·1 / 3
    total, cover = model.aggregate_sum(4)
    np.testing.assert_allclose(cover, [4.0, 3.0, 3.0])
    np.testing.assert_allclose(total, [8.0, 3.0, 3.0])  # cover · drift: what the devices' deltas add up to
