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
        "seeds": [0],
        "battery": False,
        "clip_norm": 0.0,
        "trim": 0.2,
        "krum_f": 0.2,
    }
    assert report["columns"] == ["sign-flip:20%"]
    assert set(report["table"]) == {"fedavg", "median"}
    for row in report["results"]:
        assert row["attack"] == "sign-flip" and row["pct"] == 20 and row["attackers"] == 2 and row["seed"] == 0
        assert 0 < row["final_accuracy"] <= 1 and len(row["accuracy_by_round"]) == 2
        assert report["table"][row["rule"]]["sign-flip:20%"] == row["final_accuracy"]  # the mean of one seed
        assert report["std"][row["rule"]]["sign-flip:20%"] == 0.0
        assert report["vs_clean"][row["rule"]]["sign-flip:20%"] is None  # the quick run has no clean FedAvg run
    assert (tmp_path / "poisoning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "median" in done.stdout and "sign-flip:20%" in done.stdout


def test_summary_over_seeds_is_mean_std_and_the_paired_difference_to_clean_fedavg() -> None:
    from benchmarks.poisoning import summarize

    def run(rule: str, column: str, seed: int, acc: float | None) -> dict[str, object]:
        return {"rule": rule, "column": column, "seed": seed, "final_accuracy": acc}

    clean = [run("fedavg", "none", s, a) for s, a in ((0, 0.9), (1, 0.8))]
    attacked = [run("krum", "sign-flip:20%", s, a) for s, a in ((0, 0.85), (1, 0.8))]
    failed = [run("median", "sign-flip:20%", 0, 0.7), run("median", "sign-flip:20%", 1, None)]
    summary = summarize(clean + attacked + failed)
    assert summary["table"]["krum"]["sign-flip:20%"] == pytest.approx(0.825)
    assert summary["std"]["krum"]["sign-flip:20%"] == pytest.approx(0.05 / 2**0.5)  # sample std of 0.85, 0.8
    assert summary["vs_clean"]["krum"]["sign-flip:20%"] == pytest.approx(-0.025)  # (−0.05 + 0) / 2
    assert summary["table"]["fedavg"]["none"] == pytest.approx(0.85)
    assert summary["vs_clean"]["fedavg"]["none"] == 0.0
    assert summary["table"]["median"]["sign-flip:20%"] is None  # a failed seed leaves the cell empty
