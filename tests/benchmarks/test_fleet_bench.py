"""Smoke test of benchmarks/fleet.py: a --quick run (50 devices, 1 gateway, 1 round through a real demo) prints its
table and writes a JSON of the right shape with sane figures (no targets asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet.py"

pytestmark = pytest.mark.timeout(300)


def test_quick_run_counts_every_device_and_reports_the_fleet_process(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=280
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Fleet: 50 devices" in run.stdout
    report = json.loads(out.read_text())
    assert report["config"]["devices"] == 50 and report["config"]["gateways"] == 1 and report["config"]["quick"]
    assert report["devices_connected"] == 50
    assert report["counted_per_round"] == [50]
    assert set(report["checks"]) == {
        "every_device_connected",
        "every_device_counted_each_round",
        "rss_le_600_mb",
        "round_le_60_s",
    }
    assert report["anchor"]["train_round_s"] > 0 and report["anchor"]["train_cpu_s"] > 0
    assert len(report["round_s"]) == 1 and report["round_s"][0] > 0
    assert report["peak_rss_mb"] >= report["base_rss_mb"] > 0
    assert report["fleet_cpu_s"] > 0 and len(report["load"]["before"]) == 3
    # One network loop for every connection: the fleet's threads do not grow with its devices.
    assert report["fleet_threads"] < 10
