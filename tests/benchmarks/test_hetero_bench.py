"""Smoke test of benchmarks/hetero.py: a --quick run (small batched demos: 40 % of the devices at half width, the
same fleet excluding them, every device whole; RAM classes at random and by data) prints its table and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hetero.py"

pytestmark = pytest.mark.timeout(600)


def test_quick_run_counts_the_half_width_updates(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=580
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "random: sliced vs excluded" in run.stdout and "by-data: sliced vs excluded" in run.stdout
    report = json.loads((tmp_path / "hetero.json").read_text())
    summary = report["summary"]
    assert set(summary) == {f"{p}/{f}" for p in ("random", "by-data") for f in ("sliced", "excluded", "all-full")}
    # 10 devices, 40 % limited: with widths those 4 train at half width and are counted; excluded, they sit out.
    for place in ("random", "by-data"):
        sliced, excluded = summary[f"{place}/sliced"], summary[f"{place}/excluded"]
        assert sliced["k_by_width_mean"] == {"0.5": 4.0, "1": 6.0} and sliced["k_mean"] == 10
        assert excluded["k_by_width_mean"] == {"1": 6.0} and excluded["k_mean"] == 6
        assert summary[f"{place}/all-full"]["k_mean"] == 10
    assert all(s["all_counted"] for s in summary.values())
    for runs in report["results"].values():
        assert len(runs) == 1 and len(runs[0]["accuracy_by_round"]) == 2
