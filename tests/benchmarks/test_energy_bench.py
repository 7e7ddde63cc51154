"""Smoke test of benchmarks/energy.py: a --quick run (naive and aware demos) prints its table and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "energy.py"

pytestmark = pytest.mark.timeout(600)


def test_quick_run_writes_both_policies(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=580
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "solar-harvesting fleet, 3 rounds" in run.stdout
    report = json.loads((tmp_path / "energy.json").read_text())
    assert report["config"]["rounds"] == 3 and report["config"]["scenario"]["IOTFL_BATTERY_J"] == "8.0"
    assert list(report["results"]) == ["naive", "aware"]
    for r in report["results"].values():
        assert "error" not in r and 0.0 <= r["final_accuracy"] <= 1.0
        assert r["devices"] == 10 and list(r["alive_by_round"]) == ["1", "2", "3"]
        kinds = r["joules_by_kind"]
        assert kinds["rx"] > 0 and kinds["compute"] > 0 and kinds["idle"] > 0 and kinds["tx"] > 0
        assert r["joules_total"] == pytest.approx(sum(kinds.values()), abs=0.01)
    assert (tmp_path / "logs" / "aware.log").exists()
