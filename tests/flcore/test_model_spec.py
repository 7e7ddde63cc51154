"""ModelSpec: parameter count, the contract's flat order, init, forward pass and evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flcore.model import ModelSpec


def test_param_count_matches_hand_sum() -> None:
    assert ModelSpec((2, 3, 2)).param_count == (2 * 3 + 3) + (3 * 2 + 2) == 17
    assert ModelSpec((64, 32, 10)).param_count == 2410
    assert ModelSpec((10, 16, 5)).param_count == 261
    assert ModelSpec((4, 1)).param_count == 5


def test_flat_order_is_weight_row_major_then_bias_per_layer() -> None:
    spec = ModelSpec((2, 3, 2))
    flat = np.arange(17, dtype=np.float32)
    (w1, b1), (w2, b2) = spec.unflatten(flat)
    # layer 1: weight [out=3, in=2] row-major (values 0..5), then bias [3] (6..8)
    np.testing.assert_array_equal(w1, [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(b1, [6, 7, 8])
    # layer 2: weight [2, 3] (9..14), then bias [2] (15, 16)
    np.testing.assert_array_equal(w2, [[9, 10, 11], [12, 13, 14]])
    np.testing.assert_array_equal(b2, [15, 16])


def test_unflatten_returns_views_into_the_flat_vector() -> None:
    spec = ModelSpec((2, 3, 2))
    flat = np.zeros(17, dtype=np.float32)
    (w1, _), (_, b2) = spec.unflatten(flat)
    w1[1, 0] = 5.0
    b2[1] = 7.0
    assert flat[2] == 5.0 and flat[16] == 7.0


def test_unflatten_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="expected 17 parameters"):
        ModelSpec((2, 3, 2)).unflatten(np.zeros(16, dtype=np.float32))


@pytest.mark.parametrize("layers", [(4,), (), (4, 0), (4, True), (4, 2.0), (4, 5000), tuple([2] * 10)])
def test_invalid_layers_raise(layers: tuple) -> None:
    with pytest.raises(ValueError):
        ModelSpec(layers)


def test_layers_list_becomes_tuple() -> None:
    spec = ModelSpec([3, 2])  # type: ignore[arg-type]
    assert spec.layers == (3, 2) and spec == ModelSpec((3, 2))


def test_init_reproducible_float32_zero_bias_he_bound() -> None:
    spec = ModelSpec((8, 4, 3))
    a, b, c = spec.init(7), spec.init(7), spec.init(8)
    assert a.dtype == np.float32 and a.shape == (spec.param_count,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for w, bias in spec.unflatten(a):
        np.testing.assert_array_equal(bias, 0.0)
        assert np.abs(w).max() <= math.sqrt(6.0 / w.shape[1])
        assert np.abs(w).max() > 0


def test_logits_equal_explicit_numpy() -> None:
    spec = ModelSpec((3, 4, 2))
    rng = np.random.default_rng(0)
    flat = rng.normal(size=spec.param_count).astype(np.float32)
    x = rng.normal(size=(5, 3)).astype(np.float32)
    w1 = flat[:12].reshape(4, 3)
    b1 = flat[12:16]
    w2 = flat[16:24].reshape(2, 4)
    b2 = flat[24:26]
    expected = np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2
    np.testing.assert_allclose(spec.logits(flat, x), expected, rtol=1e-6, atol=1e-6)


def test_logits_no_relu_after_last_layer() -> None:
    spec = ModelSpec((1, 1))
    flat = np.array([1.0, -5.0], dtype=np.float32)  # w=1, b=-5
    np.testing.assert_array_equal(spec.logits(flat, np.array([[1.0]])), [[-4.0]])


def test_evaluate_tiny_hand_case() -> None:
    spec = ModelSpec((2, 2))
    flat = np.array([1, 0, 0, 1, 0, 0], dtype=np.float32)  # identity weight, zero bias: logits = x
    x = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]], dtype=np.float32)
    y = np.array([0, 0, 0])
    accuracy, loss = spec.evaluate(flat, x, y)
    assert accuracy == pytest.approx(2 / 3)
    # -log softmax of class 0: log(1 + e^-1) for rows 1 and 3, log(1 + e) for row 2
    expected = (2 * math.log1p(math.exp(-1)) + math.log1p(math.e)) / 3
    assert loss == pytest.approx(expected, rel=1e-6)


def test_evaluate_stable_for_huge_logits() -> None:
    spec = ModelSpec((1, 2))
    flat = np.array([1000.0, -1000.0, 0.0, 0.0], dtype=np.float32)
    accuracy, loss = spec.evaluate(flat, np.array([[1.0]]), np.array([1]))
    assert accuracy == 0.0 and loss == pytest.approx(2000.0)


def test_evaluate_empty_raises() -> None:
    spec = ModelSpec((2, 2))
    with pytest.raises(ValueError, match="empty"):
        spec.evaluate(spec.init(0), np.zeros((0, 2)), np.zeros(0))


def test_footprint_bytes_hand_numbers() -> None:
    # 4 bytes × (params + grads + batch × Σ widths × 2)
    assert ModelSpec((10, 16, 5)).footprint_bytes(1) == 4 * (2 * 261 + 31 * 2) == 2336
    assert ModelSpec((64, 32, 10)).footprint_bytes(32) == 4 * (2 * 2410 + 32 * 106 * 2) == 46416
