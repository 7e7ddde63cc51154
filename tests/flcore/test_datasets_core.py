"""Synthetic datasets, the stratified split, standardization and CSV parsing (all pure, seeded)."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.datasets import HAR_ACTIVITIES, har, parse_csv, prepare, sensors, stratified_split


def test_sensors_shapes_and_layers() -> None:
    d = sensors(0, samples=500)
    assert d.name == "sensors" and d.layers == (10, 16, 5)
    assert d.x_train.shape[1] == d.x_test.shape[1] == 10
    assert len(d.x_train) + len(d.x_test) == 500
    assert abs(len(d.x_test) - 100) <= 5  # 20 % per class, rounded per class
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.classes == ("0", "1", "2", "3", "4")
    assert set(np.unique(d.y_train)) == set(range(5))


def test_sensors_class_balance_and_signal() -> None:
    d = sensors(1, samples=2000)
    counts = np.bincount(np.concatenate([d.y_train, d.y_test]), minlength=5)
    assert counts.min() > 0.8 * 400 and counts.max() < 1.2 * 400
    # the class's own feature carries the +1.0 shift: it is the largest on average for that class
    for c in range(5):
        assert d.x_train[d.y_train == c].mean(axis=0).argmax() == c


def test_har_shapes_and_classes() -> None:
    d = har(0, windows=120)
    assert d.layers == (20, 32, 6) and d.classes == HAR_ACTIVITIES
    assert d.x_train.shape[1] == 20 and len(d.x_train) + len(d.x_test) == 120
    assert np.all(np.isfinite(d.x_train))


def test_reproducible_and_seed_dependent() -> None:
    a, b, c = sensors(3, samples=200), sensors(3, samples=200), sensors(4, samples=200)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_standardized_with_training_statistics() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(400, 3))
    x[:, 2] = 7.0  # a constant column
    y = rng.integers(0, 2, 400)
    d = prepare("t", x, y, seed=0)
    np.testing.assert_allclose(d.x_train[:, :2].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(d.x_train[:, :2].std(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(d.x_train[:, 2], 0.0)  # constant stays 0, no division by zero
    # the test split uses the training mean/std, so its own mean is close to but not exactly 0
    assert abs(float(d.x_test[:, 0].mean())) < 0.3
    assert d.layers == (3, 32, 2)


def test_stratified_split_proportions() -> None:
    y = np.repeat([0, 1, 2], [100, 50, 10])
    train, test = stratified_split(y, 0.2, np.random.default_rng(0))
    assert np.bincount(y[test]).tolist() == [20, 10, 2]
    assert np.bincount(y[train]).tolist() == [80, 40, 8]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(160))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def test_stratified_split_keeps_one_of_each_on_both_sides() -> None:
    y = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2])
    train, test = stratified_split(y, 0.2, np.random.default_rng(0))
    assert set(y[test]) == {0, 1} and set(y[train]) == {0, 1, 2}  # a single-sample class stays in training


def test_prepare_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        prepare("t", np.zeros(10), np.zeros(10), 0)
    with pytest.raises(ValueError, match="one label per row"):
        prepare("t", np.zeros((10, 2)), np.zeros(9), 0)
    with pytest.raises(ValueError, match="at least 4 rows"):
        prepare("t", np.zeros((3, 2)), np.zeros(3), 0)


def test_parse_csv_without_header() -> None:
    x, y, classes = parse_csv("1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    assert x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert y.tolist() == [0, 1, 0, 1] and classes == ("0", "1")


def test_parse_csv_with_header_and_blank_lines() -> None:
    x, y, classes = parse_csv("f1, f2 ,label\n1,2,10\n\n3,4,2\n5,6,10\n7,8.5,2\n\n")
    assert x.shape == (4, 2) and x[3, 1] == 8.5
    assert classes == ("2", "10")  # integer labels sort numerically
    assert y.tolist() == [1, 0, 1, 0]


def test_parse_csv_string_labels_sorted() -> None:
    text = "a,b,kind\n1,1,walk\n2,2,run\n3,3,sit\n4,4,run\n"
    x, y, classes = parse_csv(text)
    assert classes == ("run", "sit", "walk")
    assert y.tolist() == [2, 0, 1, 0]


def test_parse_csv_string_labels_without_header_keep_the_first_row() -> None:
    x, y, classes = parse_csv("5.1,3.5,setosa\n4.9,3.0,setosa\n6.3,3.3,virginica\n5.8,2.7,virginica\n")
    assert x.shape == (4, 2) and x[0].tolist() == [5.1, 3.5]
    assert classes == ("setosa", "virginica") and y.tolist() == [0, 0, 1, 1]


def test_parse_csv_numeric_header_names_above_integer_labels() -> None:
    x, y, classes = parse_csv("0,1,label\n1,2,3\n1,2,1\n1,2,3\n1,2,1\n")
    assert x.shape == (4, 2) and classes == ("1", "3")


def test_parse_csv_ragged_row_names_its_line() -> None:
    with pytest.raises(ValueError, match="line 3: 2 columns, expected 3"):
        parse_csv("1,2,0\n3,4,1\n5,6\n7,8,1\n9,9,0\n")
    with pytest.raises(ValueError, match="line 5: 4 columns, expected 3"):
        parse_csv("a,b,c\n1,2,0\n\n3,4,1\n5,6,7,1\n7,8,1\n")


def test_parse_csv_non_numeric_feature_names_its_line() -> None:
    with pytest.raises(ValueError, match="line 4: a feature column is not a number"):
        parse_csv("a,b,c\n1,2,0\n3,4,1\n5,x,1\n7,8,0\n")


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "no rows"),
        ("\n\n", "no rows"),
        ("1\n2\n3\n4\n", "at least one feature column"),
        ("1,0\n2,1\n3,0\n", "3 data rows"),
        ("1,0\n2,0\n3,0\n4,0\n", "single class"),
        ("1,0\n2,1\ninf,0\n4,1\n", "non-finite"),
    ],
)
def test_parse_csv_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_csv(text)
