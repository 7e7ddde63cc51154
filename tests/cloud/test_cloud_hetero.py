"""Heterogeneous widths at the cloud: ``widths`` in rounds/current from the setting, each aggregate's ``cover``
stored, and the global step averaging each parameter over the samples that trained it (SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest
from cloud_client import Cloud
from typer.testing import CliRunner

from cloud.settings import CloudSettings
from flcore.hetero import indices
from iotfl.cli import app


def test_rounds_current_names_the_widths(start_cloud) -> None:
    assert start_cloud().current()["widths"] is None
    assert start_cloud(widths="class1=0.5, class2=0.75").current()["widths"] == {"class1": 0.5, "class2": 0.75}


def test_each_parameter_is_averaged_over_the_samples_that_trained_it(start_cloud) -> None:
    cloud: Cloud = start_cloud(rounds=1, widths="class1=0.5")
    _, w0 = cloud.model()
    p = cloud.spec.param_count
    idx = indices(cloud.spec, 0.5)
    inside = np.zeros(p, dtype=bool)
    inside[idx] = True
    # gw0: 6 samples of whole updates moving everything by 0.01, and 2 of a half-width device moving its slice by 0.05
    cover0 = np.where(inside, 8.0, 6.0).astype(np.float32)
    sum0 = np.where(inside, 6 * 0.01 + 2 * 0.05, 6 * 0.01).astype(np.float32)
    # gw1: only whole updates (no cover): 4 samples moving everything by -0.02
    sum1 = np.full(p, 4 * -0.02, dtype=np.float32)
    cloud.checkin("gw0", "gw1")
    assert cloud.post(cloud.agg("gw0", 1, n=8, k=3, sum=sum0, cover=cover0)).json()["accepted"]
    assert cloud.post(cloud.agg("gw1", 1, n=4, k=2, sum=sum1)).json()["accepted"]
    assert cloud.round(1)["state"] == "closed"
    _, w1 = cloud.model()
    step = w1 - w0
    np.testing.assert_allclose(step[inside], (6 * 0.01 + 2 * 0.05 - 0.08) / 12, atol=1e-6)
    np.testing.assert_allclose(step[~inside], (6 * 0.01 - 0.08) / 10, atol=1e-6)
    assert cloud.round(1)["k"] == 5


def test_bad_widths_are_refused() -> None:
    assert CloudSettings(widths="class1=0.5").width_map == {"class1": 0.5}
    assert CloudSettings(widths=" ").widths is None
    for bad in ("class1=0", "class1=2", "nope=0.5", "class1"):
        with pytest.raises(ValueError, match="widths"):
            CloudSettings(widths=bad)
    result = CliRunner().invoke(app, ["cloud", "--widths", "class1=1.5", "--rounds", "1"])
    assert result.exit_code == 2 and "widths" in result.output
