"""Robust aggregation rules on known small matrices, outliers, lying sample counts, and what the rows hold."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.fedavg import WeightedSum
from flcore.quantize import dequantize, quantize
from flcore.robust import RULE_NAMES, RULES, Rows, RuleParams, aggregate, check_rule, robust_sum
from flcore.robust.krum import assumed_attackers


def exact_rows(matrix: list[list[int]], n: list[int] | None = None, max_floats: int = 1 << 20) -> Rows:
    """Int8 rows with scale 1 (one chunk), so dequantized values are the integers themselves."""
    m = np.asarray(matrix, dtype=np.int8)
    rows = Rows(m.shape[1], max_floats=max_floats)
    for i, q in enumerate(m):
        rows.add(q, np.ones(1, dtype=np.float32), m.shape[1], (n or [10] * len(m))[i])
    return rows


MATRIX = [
    [1, 2, 3, 4],
    [2, 4, 6, 8],
    [3, 6, 9, 12],
    [4, 8, 12, 16],
    [100, -100, 100, -100],
]


def test_median_is_exact_per_coordinate() -> None:
    result = aggregate("median", exact_rows(MATRIX), RuleParams())
    assert result.delta.tolist() == [3.0, 4.0, 9.0, 8.0]
    assert result.delta.dtype == np.float64 and result.kept.all()


def test_trimmed_mean_drops_the_extremes_of_each_coordinate() -> None:
    # k = 5, trim 0.2: one value cut at each end of every column, the middle three averaged
    result = aggregate("trimmed-mean", exact_rows(MATRIX), RuleParams(trim=0.2))
    assert result.delta.tolist() == [3.0, 4.0, 9.0, 8.0]  # e.g. column 2: -100 and 8 cut, mean of 2, 4, 6
    skewed = aggregate("trimmed-mean", exact_rows([[1], [2], [4], [10], [100]]), RuleParams(trim=0.2))
    assert np.allclose(skewed.delta, [16 / 3])  # 1 and 100 cut (the median would be 4)
    # trim 0 is the plain unweighted mean
    assert np.allclose(aggregate("trimmed-mean", exact_rows(MATRIX), RuleParams(trim=0)).delta, np.mean(MATRIX, 0))


def test_clip_with_a_fixed_bound() -> None:
    rows = exact_rows([[3, 4, 0, 0], [0, 0, 0, 1]])
    result = aggregate("clip", rows, RuleParams(clip_norm=1.0))
    assert np.allclose(result.delta, [0.3, 0.4, 0.0, 0.5])  # [0.6, 0.8] and [0, 1], averaged


def test_clip_at_the_median_norm_bounds_an_outlier() -> None:
    rows = exact_rows([[1, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 100]])
    result = aggregate("clip", rows, RuleParams())  # median norm 2.5
    assert np.allclose(result.delta, [0.25, 0.5, 0.625, 0.625])


def test_multi_krum_keeps_the_k_minus_f_closest_and_averages_them() -> None:
    rows = exact_rows(MATRIX)
    result = aggregate("krum", rows, RuleParams(krum_f=0.2))  # f = 1: keep 4
    assert result.kept.tolist() == [True, True, True, True, False]
    assert np.allclose(result.delta, np.mean(MATRIX[:4], axis=0))


def test_krum_f_covers_the_assumed_share_within_krums_bound() -> None:
    # ⌈krum_f × k⌉, exact for float products like 0.3 × 10, and at most ⌊(k − 3) / 2⌋ (Krum needs k > 2f + 2)
    cases = {(0.2, 8): 2, (0.2, 10): 2, (0.2, 5): 1, (0.3, 10): 3, (0.4, 8): 2, (0.4, 4): 0, (0.2, 3): 0, (0.0, 9): 0}
    assert {case: assumed_attackers(*case) for case in cases} == cases
    # 2 outliers among 8 at krum_f 0.2 (1.6 assumed): both dropped
    rows = exact_rows([[i, i, i, i] for i in range(1, 7)] + [[100, -100, 100, -100], [-90, 90, -90, 90]])
    result = aggregate("krum", rows, RuleParams(krum_f=0.2))
    assert result.kept.tolist() == [True] * 6 + [False] * 2
    assert np.allclose(result.delta, [3.5] * 4)


def test_trimmed_mean_cuts_the_share_rounded_up_and_keeps_a_middle() -> None:
    column = [[1], [2], [3], [4], [5], [6], [100], [-100]]
    # k = 8, trim 0.2: 2 cut at each end (1.6 rounded up) → mean of 2..5
    assert np.allclose(aggregate("trimmed-mean", exact_rows(column), RuleParams(trim=0.2)).delta, [3.5])
    # k = 3, trim 0.4: ⌈1.2⌉ = 2 per end would cut everything; 1 per end leaves the middle value
    assert aggregate("trimmed-mean", exact_rows([[1], [7], [50]]), RuleParams(trim=0.4)).delta.tolist() == [7.0]


def test_krum_with_too_few_rows_is_the_weighted_mean() -> None:
    result = aggregate("krum", exact_rows([[1, 1, 1, 1], [3, 3, 3, 3]], n=[1, 3]), RuleParams(krum_f=0.4))
    assert result.kept.all() and np.allclose(result.delta, [2.5] * 4)  # n 3 is under 2 × median 2


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_x100_outlier_is_removed_or_bounded(rule: str) -> None:
    rng = np.random.default_rng(0)
    size, chunk = 300, 64
    honest = [rng.normal(0.05, 0.01, size).astype(np.float32) for _ in range(9)]
    rows = Rows(size)
    for delta in [*honest, 100 * honest[0]]:
        scales, q = quantize(delta, chunk)
        rows.add(q, scales, chunk, 20)
    truth = np.mean([dequantize(*quantize(d, chunk)[::-1], chunk) for d in honest], axis=0)
    fedavg_error = np.linalg.norm(rows.weighted_sum(np.ones(10)) / 10 - truth)
    error = np.linalg.norm(aggregate(rule, rows, RuleParams()).delta - truth)
    assert fedavg_error > 10 * np.linalg.norm(truth)  # the outlier drags plain FedAvg far away
    assert error < 0.2 * np.linalg.norm(truth)


@pytest.mark.parametrize("rule", ["clip", "krum"])
def test_lying_about_n_buys_at_most_n_cap_times_the_median(rule: str) -> None:
    rows = exact_rows([[1, 1, 1, 1], [1, 1, 1, 1], [4, 4, 4, 4]], n=[10, 10, 100_000])
    result = aggregate(rule, rows, RuleParams(clip_norm=100, krum_f=0, n_cap=2.0))
    assert np.allclose(result.delta, [(10 + 10 + 4 * 20) / 40] * 4)  # the liar weighs 2 × 10, not 100,000


@pytest.mark.parametrize("rule", ["median", "trimmed-mean"])
def test_order_statistics_ignore_n(rule: str) -> None:
    same = aggregate(rule, exact_rows(MATRIX, n=[1, 1, 1, 1, 1]), RuleParams()).delta
    assert np.array_equal(aggregate(rule, exact_rows(MATRIX, n=[1, 1, 1, 1, 99_999]), RuleParams()).delta, same)


def test_rows_hold_int8_and_blocks_stay_within_max_floats() -> None:
    rng = np.random.default_rng(1)
    size, chunk, k = 1000, 128, 6
    small = Rows(size, max_floats=50)
    big = Rows(size)
    for _ in range(k):
        scales, q = quantize(rng.normal(0, 1, size), chunk)
        small.add(q, scales, chunk, 7)
        big.add(q, scales, chunk, 7)
    assert small.dtypes() == {np.dtype(np.int8)}
    assert small.nbytes == k * size + k * 4 * 8  # k × P int8 plus 8 float32 scales per row: no float matrix
    shapes = [block.shape for _, block in small.blocks()]
    assert all(rows == k and rows * cols <= 50 for rows, cols in shapes) and sum(c for _, c in shapes) == size
    for rule in RULES:
        a = aggregate(rule, small, RuleParams()).delta
        b = aggregate(rule, big, RuleParams()).delta
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12), rule


def test_a_row_factor_scales_the_row() -> None:
    rows = Rows(4)
    rows.add(np.array([2, 4, 6, 8], dtype=np.int8), np.ones(1, dtype=np.float32), 4, 5, factor=0.5)
    assert aggregate("median", rows, RuleParams()).delta.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_float_rows_for_the_cloud() -> None:
    rows = Rows(3)
    for x in ([1.0, 2.0, 3.0], [1.5, 2.5, 3.5], [50.0, -50.0, 50.0]):
        rows.add_float(np.array(x), 100)
    assert np.allclose(aggregate("median", rows, RuleParams()).delta, [1.5, 2.0, 3.5])


def test_robust_sum_keeps_the_counts_and_carries_the_robust_mean() -> None:
    acc = WeightedSum(3)
    acc.add(np.array([1.0, 1.0, 1.0]), 4, 0.5)
    acc.add(np.array([9.0, 9.0, 9.0]), 6, 1.5)
    out = robust_sum(acc, np.array([2.0, 3.0, 4.0]))
    assert (out.n, out.k, out.mean_loss) == (10, 2, acc.mean_loss)
    assert np.allclose(out.mean_delta(), [2.0, 3.0, 4.0])


def test_bad_parameters_and_names_are_clear_errors() -> None:
    assert RULE_NAMES == ("fedavg", "clip", "trimmed-mean", "median", "krum")
    assert check_rule("krum") == "krum"
    with pytest.raises(ValueError, match="unknown aggregation rule 'mean'.*fedavg, clip"):
        check_rule("mean")
    for bad in ({"trim": 0.5}, {"trim": -0.1}, {"krum_f": 0.5}, {"clip_norm": -1}, {"clip_norm": float("inf")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RuleParams(**bad)
    with pytest.raises(ValueError, match="no updates"):
        aggregate("median", Rows(3), RuleParams())
    with pytest.raises(ValueError, match="not a robust rule"):
        aggregate("fedavg", exact_rows([[1]]), RuleParams())
    with pytest.raises(ValueError, match="int8"):
        Rows(4).add(np.zeros(4, dtype=np.float32), np.ones(1, dtype=np.float32), 4, 1)
    with pytest.raises(ValueError, match="scales"):
        Rows(4).add(np.zeros(4, dtype=np.int8), np.ones(2, dtype=np.float32), 4, 1)
