"""The poisoning benchmark's smoke run (``--quick``): two real demo runs, then the JSON table and the PNG plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_the_table_and_the_plot(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "poisoning.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "poisoning.json").read_text())
    assert report["config"] == {
        "dataset": "digits",
        "devices": 10,
        "gateways": 2,
        "alpha": 0.5,
        "rounds": 2,
        "seed": 0,
        "battery": False,
        "clip_norm": 0.0,
        "trim": 0.2,
        "krum_f": 0.2,
    }
    assert report["columns"] == ["sign-flip:20%"]
    assert set(report["table"]) == {"fedavg", "median"}
    for row in report["results"]:
        assert row["attack"] == "sign-flip" and row["pct"] == 20 and row["attackers"] == 2
        assert 0 < row["final_accuracy"] <= 1 and len(row["accuracy_by_round"]) == 2
        assert report["table"][row["rule"]]["sign-flip:20%"] == row["final_accuracy"]
    assert (tmp_path / "poisoning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "median" in done.stdout and "sign-flip:20%" in done.stdout
