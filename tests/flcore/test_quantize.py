"""Per-chunk int8 quantization: the deterministic reference, error bound, stochastic unbiasedness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flcore.quantize import chunk_count, dequantize, quantize

BELOW_HALF = float(np.nextafter(np.float32(0.5), np.float32(0.0)))  # 0.49999997, the largest float32 < 0.5


def reference(x: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The docstring's rule written out per value: float32 scale and ratio, exact round half away from zero."""
    x = np.asarray(x, dtype=np.float32)
    scales, q = [], []
    for start in range(0, x.size, chunk):
        block = x[start : start + chunk]
        scale = np.float32(np.abs(block).max()) / np.float32(127)
        scales.append(scale)
        for v in block:
            if scale == 0:
                q.append(0)
                continue
            r = float(np.float32(v) / scale)  # float32 division, then exact in float64
            rounded = math.copysign(math.floor(abs(r) + 0.5), r)  # float64 holds |r| + 0.5 exactly
            q.append(int(max(-127, min(127, rounded))))
    return np.array(scales, dtype=np.float32), np.array(q, dtype=np.int8)


def test_chunk_count() -> None:
    assert [chunk_count(p, 4) for p in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]


def test_hand_example_ties_round_away_from_zero() -> None:
    x = np.array([127.0, 0.5, 1.5, 2.5, -0.5, -2.5, BELOW_HALF, -BELOW_HALF], dtype=np.float32)
    scales, q = quantize(x, 8)
    assert scales.dtype == np.float32 and scales.tolist() == [1.0]
    assert q.dtype == np.int8
    assert q.tolist() == [127, 1, 2, 3, -1, -3, 0, 0]


def test_scale_is_float32_max_over_127() -> None:
    x = np.array([0.1, -0.3, 0.2, 0.05, 1.0], dtype=np.float32)
    scales, q = quantize(x, 2)
    expected = [np.float32(0.3) / np.float32(127), np.float32(0.2) / np.float32(127), np.float32(1.0) / np.float32(127)]
    assert scales.tolist() == [float(s) for s in expected]
    assert q.tolist()[1] == -127 and q.tolist()[4] == 127


def test_zero_chunk_has_zero_scale_and_zero_q() -> None:
    x = np.array([0.0, 0.0, -0.0, 0.0, 1.0, -2.0], dtype=np.float32)
    scales, q = quantize(x, 4)
    assert scales[0] == 0.0
    assert q[:4].tolist() == [0, 0, 0, 0]
    np.testing.assert_array_equal(dequantize(q, scales, 4)[:4], 0.0)


def test_last_partial_chunk() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, -0.25, 0.125], dtype=np.float32)
    scales, q = quantize(x, 5)
    assert scales.shape == (2,) and q.shape == (7,)
    # the partial chunk's scale comes from its own two values only
    assert scales[1] == np.float32(0.25) / np.float32(127)
    assert q[5:].tolist() == [-127, 64]  # 0.125 / (0.25/127) = 63.5 → 64


def test_matches_reference_on_random_vectors() -> None:
    rng = np.random.default_rng(1)
    for size, chunk in [(1, 1), (17, 4), (100, 7), (261, 64), (2410, 256), (50, 1000)]:
        x = (rng.normal(size=size) * rng.choice([1e-6, 1e-2, 1.0, 30.0])).astype(np.float32)
        scales, q = quantize(x, chunk)
        ref_scales, ref_q = reference(x, chunk)
        np.testing.assert_array_equal(scales, ref_scales)
        np.testing.assert_array_equal(q, ref_q)


def test_error_bound_half_scale() -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_cauchy(4000)).astype(np.float32)
    chunk = 64
    scales, q = quantize(x, chunk)
    err = np.abs(x - dequantize(q, scales, chunk))
    bound = np.repeat(scales, chunk)[: x.size] / 2
    # float32 products add at most one rounding of the value on top of the half step
    assert np.all(err <= bound * (1 + 1e-5) + np.abs(x) * 1e-6)


def test_dequantize_is_q_times_scale() -> None:
    q = np.array([1, -2, 127, 0, 5], dtype=np.int8)
    scales = np.array([0.5, 2.0], dtype=np.float32)
    out = dequantize(q, scales, 3)
    assert out.dtype == np.float32 and out.tolist() == [0.5, -1.0, 63.5, 0.0, 10.0]


def test_dequantize_wrong_scale_count_raises() -> None:
    with pytest.raises(ValueError, match="need 2 scales"):
        dequantize(np.zeros(5, dtype=np.int8), np.ones(3, dtype=np.float32), 3)


def test_stochastic_unbiased_and_in_range() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=64).astype(np.float32)
    x[0] = 10.0  # one large value: small values sit between two steps and rely on the random rounding
    chunk = 64
    draws = 4000
    total = np.zeros(x.size, dtype=np.float64)
    for _ in range(draws):
        scales, q = quantize(x, chunk, rng=rng)
        assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
        total += dequantize(q, scales, chunk)
    scale = float(scales[0])
    mean_err = total / draws - x
    # each draw's error is within one step with variance <= scale²/4: the mean shrinks like scale / (2·√draws)
    assert np.all(np.abs(mean_err) < 5 * scale / (2 * math.sqrt(draws)))
    assert abs(mean_err.mean()) < scale / 100


def test_stochastic_extremes_stay_clamped() -> None:
    rng = np.random.default_rng(4)
    x = np.array([3.0, -3.0, 2.999999, -2.999999], dtype=np.float32)
    for _ in range(200):
        _, q = quantize(x, 4, rng=rng)
        assert q[0] == 127 and q[1] == -127
        assert -127 <= q.min() and q.max() <= 127


def test_stochastic_exact_steps_are_not_randomized() -> None:
    rng = np.random.default_rng(5)
    x = np.array([127.0, 3.0, -64.0, 0.0], dtype=np.float32)  # scale 1: every ratio is an integer
    for _ in range(50):
        assert quantize(x, 4, rng=rng)[1].tolist() == [127, 3, -64, 0]


@pytest.mark.parametrize("chunk", [0, -1, 65537, 2.0, True, "4"])
def test_bad_chunk_raises(chunk: object) -> None:
    with pytest.raises(ValueError, match="chunk"):
        quantize(np.ones(4, dtype=np.float32), chunk)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk"):
        dequantize(np.ones(4, dtype=np.int8), np.ones(1, dtype=np.float32), chunk)  # type: ignore[arg-type]


def test_non_finite_input_raises() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        quantize(np.array([1.0, np.nan], dtype=np.float32), 2)
    with pytest.raises(ValueError, match="non-finite"):
        quantize(np.array([np.inf], dtype=np.float32), 2)
