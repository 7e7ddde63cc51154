"""``iotfl demo --personal-epochs``: devices in both simulator modes report local accuracies through real gateways
to the cloud, whose status, ``iotfl status`` table and the demo report show them per round."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("sim", ["device", "batched"])
def test_demo_reports_global_vs_personalized_accuracy(mosquitto, tmp_path: Path, sim: str) -> None:
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "iotfl", "demo", "--devices", "8", "--gateways", "2", "--rounds", "2", "--dataset",
           "sensors", "--alpha", "0.1", "--no-battery", "--sim", sim, "--personal-epochs", "3", "--broker",
           mosquitto.url, "--json", str(out), "--workdir", str(tmp_path / "w")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["config"]["personal_epochs"] == 3
    trained = [r["k"] for r in report["rounds"]]
    for r in report["rounds"]:
        assert 1 <= r["p_devices"] <= r["k"] and 0 <= r["l_accuracy"] <= 1 and 0 <= r["p_accuracy"] <= 1
    section = report["personalization"]
    assert [p["round"] for p in section["per_round"]] == [1, 2] and min(trained) >= 1
    last = report["rounds"][-1]
    assert (section["final_personalized"], section["final_global"]) == (last["p_accuracy"], last["l_accuracy"])
    assert section["gain"] == pytest.approx(last["p_accuracy"] - last["l_accuracy"])
    assert "local held-out accuracy, last round: personalized" in done.stdout
    assert "local:" in done.stdout  # the summary table's extra columns (wrapped in 80 columns)
