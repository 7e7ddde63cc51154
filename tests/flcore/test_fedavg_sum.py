"""WeightedSum and fedavg.apply against direct numpy arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flcore.fedavg import WeightedSum, apply
from flcore.quantize import quantize


def test_weighted_sum_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    deltas = rng.normal(size=(4, 9)).astype(np.float32)
    ns = [10, 1, 250, 39]
    losses = [0.5, 2.0, 0.25, 1.0]
    acc = WeightedSum(9)
    for d, n, loss in zip(deltas, ns, losses, strict=True):
        acc.add(d, n, loss)
    weights = np.array(ns, dtype=np.float64)
    np.testing.assert_allclose(acc.total, (weights[:, None] * deltas).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(acc.mean_delta(), np.average(deltas, axis=0, weights=weights), rtol=1e-6)
    assert acc.mean_delta().dtype == np.float32
    assert (acc.n, acc.k) == (300, 4)
    assert acc.mean_loss == pytest.approx(np.average(losses, weights=weights))


def test_add_sum_folds_gateway_aggregates() -> None:
    # two gateways' Σ n·delta combine to the same result as all device updates folded into one sum
    rng = np.random.default_rng(1)
    deltas = rng.normal(size=(5, 4))
    ns = [3, 5, 7, 11, 13]
    flat = WeightedSum(4)
    for d, n in zip(deltas, ns, strict=True):
        flat.add(d, n, 1.0)
    g1, g2 = WeightedSum(4), WeightedSum(4)
    for d, n in zip(deltas[:2], ns[:2], strict=True):
        g1.add(d, n, 0.5)
    for d, n in zip(deltas[2:], ns[2:], strict=True):
        g2.add(d, n, 2.0)
    cloud = WeightedSum(4)
    cloud.add_sum(g1.total, g1.n, g1.k, g1.mean_loss)
    cloud.add_sum(g2.total, g2.n, g2.k, g2.mean_loss)
    np.testing.assert_allclose(cloud.total, flat.total, rtol=1e-12)
    assert (cloud.n, cloud.k) == (39, 5)
    assert cloud.mean_loss == pytest.approx((8 * 0.5 + 31 * 2.0) / 39)


def test_hand_numbers() -> None:
    acc = WeightedSum(2)
    acc.add(np.array([1.0, -1.0]), 1, 1.0)
    acc.add(np.array([4.0, 2.0]), 3, 3.0)
    assert acc.total.tolist() == [13.0, 5.0]
    assert acc.mean_delta().tolist() == [3.25, 1.25]
    assert acc.mean_loss == 2.5


def test_apply_fedavg_and_server_lr() -> None:
    acc = WeightedSum(3)
    acc.add(np.array([1.0, 2.0, -4.0]), 2, 0.0)
    acc.add(np.array([3.0, 0.0, 0.0]), 2, 0.0)
    base = np.array([10.0, 10.0, 10.0], dtype=np.float32)
    out = apply(base, acc)
    assert out.dtype == np.float32 and out.tolist() == [12.0, 11.0, 8.0]
    assert apply(base, acc, server_lr=0.5).tolist() == [11.0, 10.5, 9.0]
    assert base.tolist() == [10.0, 10.0, 10.0]  # the base is not modified in place


def test_empty_sum() -> None:
    acc = WeightedSum(3)
    assert math.isnan(acc.mean_loss)
    with pytest.raises(ValueError, match="no updates"):
        acc.mean_delta()
    with pytest.raises(ValueError, match="no updates"):
        apply(np.zeros(3, dtype=np.float32), acc)


@pytest.mark.parametrize("shape", [(2,), (4,), (3, 1), (1, 3), ()])
def test_wrong_shapes_raise(shape: tuple[int, ...]) -> None:
    acc = WeightedSum(3)
    with pytest.raises(ValueError, match="shape"):
        acc.add(np.zeros(shape), 1, 0.0)
    with pytest.raises(ValueError, match="shape"):
        acc.add_sum(np.zeros(shape), 1, 1, 0.0)
    assert (acc.n, acc.k) == (0, 0) and not acc.total.any()


@pytest.mark.parametrize("base_shape", [(1,), (2,), (4,), (3, 1)])
def test_apply_wrong_base_shape_raises(base_shape: tuple[int, ...]) -> None:
    acc = WeightedSum(3)
    acc.add(np.ones(3), 1, 0.0)
    with pytest.raises(ValueError, match="base has shape"):
        apply(np.zeros(base_shape, dtype=np.float32), acc)


@pytest.mark.parametrize("n,k", [(0, 1), (-5, 1), (5, 0), (5, -1)])
def test_non_positive_counts_raise(n: int, k: int) -> None:
    acc = WeightedSum(2)
    with pytest.raises(ValueError, match="positive"):
        acc.add_sum(np.ones(2), n, k, 0.0)
    if k == 1:
        with pytest.raises(ValueError, match="positive"):
            acc.add(np.ones(2), n, 0.0)
    assert (acc.n, acc.k) == (0, 0)


def _quantized(rng: np.random.Generator, size: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    scales, q = quantize(rng.normal(size=size).astype(np.float32), chunk)
    return q, scales


@pytest.mark.parametrize("size,chunk", [(10, 3), (2410, 256), (64, 64)])
def test_add_quantized_sums_n_times_q_times_scale_exactly(size: int, chunk: int) -> None:
    # 150 updates span several blocks; n·scale·q is exact in float64, so the only rounding is the summation's
    rng = np.random.default_rng(size)
    acc, reference = WeightedSum(size), WeightedSum(size)
    for _ in range(150):
        q, scales = _quantized(rng, size, chunk)
        n = int(rng.integers(1, 100_001))
        acc.add_quantized(q, scales, chunk, n, 0.5)
        reference.add(q.astype(np.float64) * np.repeat(scales.astype(np.float64), chunk)[:size], n, 0.5)
    np.testing.assert_allclose(acc.total, reference.total, rtol=1e-13, atol=0)
    assert (acc.n, acc.k, acc.loss_sum) == (reference.n, reference.k, reference.loss_sum)


def test_reading_the_total_does_not_change_how_it_is_summed() -> None:
    # the gateway replays its journal without the reads of the first run: both must end bit for bit the same
    rng = np.random.default_rng(7)
    updates = [(*_quantized(rng, 50, 8), int(rng.integers(1, 1000))) for _ in range(200)]
    read, unread = WeightedSum(50), WeightedSum(50)
    for i, (q, scales, n) in enumerate(updates):
        read.add_quantized(q, scales, 8, n, 1.0)
        unread.add_quantized(q, scales, 8, n, 1.0)
        if i % 7 == 0:
            assert read.total.shape == (50,)
    assert read.total.tobytes() == unread.total.tobytes()


def test_add_quantized_mixes_with_other_chunks_and_weighted_sums() -> None:
    acc = WeightedSum(4)
    acc.add_quantized(np.array([1, -2, 3, 4], dtype=np.int8), np.array([0.5, 0.25], dtype=np.float32), 2, 2, 1.0)
    acc.add_quantized(np.array([127, 0, 0, -127], dtype=np.int8), np.array([1.0], dtype=np.float32), 4, 1, 1.0)
    acc.add_sum(np.array([1.0, 1.0, 1.0, 1.0]), 3, 2, 1.0)
    acc.add_quantized(np.array([1, 1, 1, 1], dtype=np.int8), np.array([2.0, 4.0], dtype=np.float32), 2, 1, 1.0)
    assert acc.total.tolist() == [1.0 + 127 + 1 + 2, -2.0 + 1 + 2, 1.5 + 1 + 4, 2.0 - 127 + 1 + 4]
    assert (acc.n, acc.k) == (7, 5)


def test_add_quantized_checks_shapes() -> None:
    acc = WeightedSum(4)
    with pytest.raises(ValueError, match="int8"):
        acc.add_quantized(np.zeros(3, dtype=np.int8), np.ones(2, dtype=np.float32), 2, 1, 0.0)
    with pytest.raises(ValueError, match="scales"):
        acc.add_quantized(np.zeros(4, dtype=np.int8), np.ones(3, dtype=np.float32), 2, 1, 0.0)
    with pytest.raises(ValueError, match="positive"):
        acc.add_quantized(np.zeros(4, dtype=np.int8), np.ones(2, dtype=np.float32), 2, 0, 0.0)
    with pytest.raises(ValueError, match="float32 scales"):
        acc.add_quantized(np.zeros(4, dtype=np.int8), np.ones(2, dtype=np.float64), 2, 1, 0.0)
    with pytest.raises(ValueError, match="contiguous int8"):
        acc.add_quantized(np.zeros(8, dtype=np.int8)[::2], np.ones(2, dtype=np.float32), 2, 1, 0.0)
    assert (acc.n, acc.k) == (0, 0) and not acc.total.any()
