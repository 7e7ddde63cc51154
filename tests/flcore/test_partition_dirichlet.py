"""Dirichlet(α) label-skew partitioning: a partition of the indices, minimum sizes, skew that follows α."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.partition import dirichlet

LABELS = np.repeat(np.arange(10), 100)  # 1,000 samples, 10 balanced classes


def mean_label_entropy(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over devices of the entropy (bits) of the device's label distribution; log2(10) ≈ 3.32 is uniform."""
    out = []
    for idx in parts:
        p = np.bincount(labels[idx], minlength=10) / len(idx)
        p = p[p > 0]
        out.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(out))


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_every_index_exactly_once(alpha: float) -> None:
    parts = dirichlet(LABELS, 20, alpha, np.random.default_rng(0))
    assert len(parts) == 20
    together = np.concatenate(parts)
    assert sorted(together.tolist()) == list(range(len(LABELS)))
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)


@pytest.mark.parametrize("min_size", [1, 2, 10, 50])
def test_min_size_respected_even_when_skewed(min_size: int) -> None:
    parts = dirichlet(LABELS, 20, 0.01, np.random.default_rng(1), min_size=min_size)
    assert min(len(p) for p in parts) >= min_size
    assert sum(len(p) for p in parts) == len(LABELS)


def test_small_alpha_skews_more_than_large_alpha() -> None:
    skewed = [mean_label_entropy(LABELS, dirichlet(LABELS, 20, 0.1, np.random.default_rng(s))) for s in range(3)]
    iid = [mean_label_entropy(LABELS, dirichlet(LABELS, 20, 100.0, np.random.default_rng(s))) for s in range(3)]
    assert max(skewed) < 2.0 < 3.0 < min(iid)
    middle = mean_label_entropy(LABELS, dirichlet(LABELS, 20, 1.0, np.random.default_rng(0)))
    assert max(skewed) < middle < min(iid)


def test_reproducible_with_same_seed() -> None:
    a = dirichlet(LABELS, 8, 0.3, np.random.default_rng(42))
    b = dirichlet(LABELS, 8, 0.3, np.random.default_rng(42))
    c = dirichlet(LABELS, 8, 0.3, np.random.default_rng(43))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_single_part_gets_everything() -> None:
    (only,) = dirichlet(LABELS, 1, 0.5, np.random.default_rng(0))
    assert only.tolist() == list(range(len(LABELS)))


@pytest.mark.parametrize(
    "parts,alpha,min_size,message",
    [(0, 0.5, 2, "parts"), (5, 0.0, 2, "alpha"), (5, -1.0, 2, "alpha")],
)
def test_invalid_arguments(parts: int, alpha: float, min_size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dirichlet(LABELS, parts, alpha, np.random.default_rng(0), min_size=min_size)


def test_more_devices_than_samples_share_samples() -> None:
    """600 devices × 2 samples > 1,000: the split runs over the labels repeated twice, every copy used once."""
    parts = dirichlet(LABELS, 600, 0.5, np.random.default_rng(0))
    assert len(parts) == 600 and min(len(p) for p in parts) >= 2
    together = np.concatenate(parts)
    assert np.bincount(together, minlength=len(LABELS)).tolist() == [2] * len(LABELS)
