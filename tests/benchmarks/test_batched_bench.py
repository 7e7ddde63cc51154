"""Smoke test of benchmarks/batched.py: a --quick run (three small demos) prints its tables and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "batched.py"

pytestmark = pytest.mark.timeout(900)


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=880
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "figures (ratios within this run)" in run.stdout
    report = json.loads((tmp_path / "batched.json").read_text())
    assert report["config"]["devices"] == 200 and report["config"]["battery"] is False
    results = report["results"]
    assert list(results) == ["scale", "device", "batched"]
    scale = results["scale"]
    assert "error" not in scale and scale["sim"] == "batched"
    (only,) = scale["rounds_detail"]
    assert only["k"] == 200 and only["seconds"] > 0 and only["fleet_seconds"] > 0
    for name in ("device", "batched"):
        assert "error" not in results[name] and 0.0 <= results[name]["final_accuracy"] <= 1.0
        assert results[name]["median_k"] >= 1
    figures = report["figures"]
    assert len(figures) == 3 and all(isinstance(f["value"], float) for f in figures.values())
    assert len(report["load_average"]["before"]) == 3 and report["cpus"] >= 1
    assert (tmp_path / "logs" / "scale.log").exists()
