"""Dataset sources at the edge: the digits file, user CSV files, and clear errors for bad specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iotfl.datasets import load


def test_digits_split_and_model_shape() -> None:
    data = load("digits", 0)
    assert data.layers == (64, 32, 10)
    assert len(data.x_train) + len(data.x_test) == 1797
    assert abs(len(data.x_test) / 1797 - 0.2) < 0.01
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-5)
    # the split depends on the seed, and only on it
    assert np.array_equal(load("digits", 0).y_test, data.y_test)
    assert not np.array_equal(load("digits", 1).y_test, data.y_test)


def test_csv_file_with_header_and_string_labels(tmp_path: Path) -> None:
    rows = ["temp,humidity,label"] + [f"{20 + i % 7},{40 + i % 5},{'hot' if i % 2 else 'cold'}" for i in range(40)]
    path = tmp_path / "site.csv"
    path.write_text("\n".join(rows) + "\n")
    data = load(f"csv:{path}", 3)
    assert data.name == "csv:site.csv" and data.classes == ("cold", "hot")
    assert data.layers == (2, 32, 2) and len(data.x_train) == 32 and len(data.x_test) == 8


@pytest.mark.parametrize(
    ("spec", "message"),
    [("mnist", "unknown dataset 'mnist'"), ("csv:/nonexistent/x.csv", "cannot read /nonexistent/x.csv")],
)
def test_bad_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load(spec, 0)


def test_bad_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("1,2,0\n3,4,1\n5,x,0\n7,8,1\n9,9,0\n")
    with pytest.raises(ValueError, match="bad.csv: line 3"):
        load(f"csv:{path}", 0)
