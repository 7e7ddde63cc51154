"""Client-side DP arithmetic (flcore.privacy): L2 clipping to C and per-coordinate Gaussian noise of std z·C."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.privacy import clip_and_noise


def test_a_long_delta_is_scaled_down_to_norm_c_keeping_its_direction() -> None:
    delta = np.random.default_rng(1).normal(0, 1, 2410).astype(np.float32)
    before = float(np.linalg.norm(delta.astype(np.float64)))
    out, norm = clip_and_noise(delta, 0.5, 0.0, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == delta.shape
    assert norm == pytest.approx(before, rel=1e-12) and norm > 40
    assert float(np.linalg.norm(out.astype(np.float64))) == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_allclose(out, delta * (0.5 / before), rtol=1e-5, atol=1e-9)


def test_a_short_delta_is_left_as_it_is() -> None:
    delta = np.array([0.3, -0.4, 0.0], dtype=np.float32)  # norm 0.5
    out, norm = clip_and_noise(delta, 2.0, 0.0, np.random.default_rng(0))
    assert norm == pytest.approx(0.5, rel=1e-7)
    assert out.tobytes() == delta.tobytes()


@pytest.mark.parametrize(("clip", "z"), [(0.5, 0.8), (2.0, 1.0), (1.0, 0.1)])
def test_noise_is_centered_with_std_z_times_c(clip: float, z: float) -> None:
    size = 200_000
    out, norm = clip_and_noise(np.zeros(size, dtype=np.float32), clip, z, np.random.default_rng(7))
    assert norm == 0.0
    # sample std of 200k normals is within ~0.2 % of the truth; 2 % leaves room and still catches z or C mixed up
    assert float(out.std()) == pytest.approx(z * clip, rel=0.02)
    assert abs(float(out.mean())) < 5 * z * clip / np.sqrt(size)


def test_a_seeded_generator_gives_the_same_bytes_and_another_seed_does_not() -> None:
    delta = np.linspace(-1, 1, 1000, dtype=np.float32)
    a, _ = clip_and_noise(delta, 1.0, 1.0, np.random.default_rng(42))
    b, _ = clip_and_noise(delta, 1.0, 1.0, np.random.default_rng(42))
    c, _ = clip_and_noise(delta, 1.0, 1.0, np.random.default_rng(43))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize(
    ("delta", "clip", "z", "message"),
    [
        (np.ones(4), 0.0, 1.0, "clip"),
        (np.ones(4), -1.0, 1.0, "clip"),
        (np.ones(4), float("nan"), 1.0, "clip"),
        (np.ones(4), float("inf"), 1.0, "clip"),
        (np.ones(4), 1.0, -0.5, "noise_multiplier"),
        (np.ones(4), 1.0, float("inf"), "noise_multiplier"),
        (np.ones((2, 2)), 1.0, 1.0, "flat vector"),
        (np.array([1.0, np.nan]), 1.0, 1.0, "non-finite"),
    ],
)
def test_bad_arguments_raise_and_leave_the_delta_alone(delta: np.ndarray, clip: float, z: float, message: str) -> None:
    kept = delta.copy()
    with pytest.raises(ValueError, match=message):
        clip_and_noise(delta, clip, z, np.random.default_rng(0))
    np.testing.assert_array_equal(delta, kept)
