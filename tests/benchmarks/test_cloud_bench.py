"""Smoke test of benchmarks/cloud.py: a --quick run (10 gateways, 2 rounds, a real `iotfl cloud` process) closes
every round on SQLite and on PostgreSQL (or says why PostgreSQL was skipped) and writes a JSON of the documented
shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cloud.py"


def test_quick_run_closes_every_round_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "cloud.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=280
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "gateways posting aggregates concurrently" in run.stdout
    report = json.loads(out.read_text())
    assert report["config"] == {"gateways": 10, "rounds": 2, "devices_per_gateway": 12}
    by_db = {r["db"]: r for r in report["results"]}
    assert set(by_db) == {"sqlite", "postgresql"}
    for db, result in by_db.items():
        if "skipped" in result:
            assert db == "postgresql" and "PostgreSQL skipped" in run.stdout
            continue
        assert result["rounds_closed"] == 2 and result["accepted"] == 20
        assert len(result["aggregates_per_s_by_round"]) == 2
        assert 0 < result["p50_ms"] <= result["p99_ms"]
        assert result["aggregates_per_s"] > 0 and result["anchor_healthz_per_s"] > 0
        assert result["ratio_to_anchor"] > 0
