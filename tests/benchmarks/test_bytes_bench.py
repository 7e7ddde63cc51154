"""Smoke test of benchmarks/bytes.py: a --quick run (f32 and topk through two real demo runs) writes the JSON with
its summary, ratios and targets, and the PNG plot; the targets themselves are not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bytes import judge

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bytes.py"


def test_quick_run_writes_summary_targets_and_plot(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "bytes.json").read_text())
    assert report["config"]["encodings"] == ["f32", "topk"] and report["config"]["rounds"] == 1
    assert set(report["load_average"]) == {"start", "end"}
    assert [(r["enc"], r["seed"]) for r in report["runs"]] == [("f32", 0), ("topk", 0)]
    f32, topk = report["summary"]["f32"], report["summary"]["topk"]
    for row in (f32, topk):
        assert 0 < row["final_accuracy"] <= 1 and len(row["accuracy_by_round"]) == 1
        assert row["bytes_up_total"] == row["cumulative_bytes_by_round"][-1] > 0
    assert f32["payload_ratio"] == 1.0 and f32["delta_ratio"] == 1.0 and f32["accuracy_cost_points"] == 0.0
    # digits: P = 2410, 5 % kept → 121 values: 5 bytes each + 1 scale; f32 sends 4 bytes per value
    assert (f32["delta_bytes_per_update"], topk["delta_bytes_per_update"]) == (4 * 2410, 5 * 121 + 4)
    assert topk["payload_ratio"] > 5 and topk["delta_ratio"] == pytest.approx(9640 / 609)
    assert [t["min_ratio"] for t in report["targets"]] == [3.9, 8.0]
    assert (tmp_path / "bytes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "× f32 payload" in done.stdout


def test_targets_are_judged_by_ratio_and_accuracy_cost() -> None:
    summary = {
        "f32": {"payload_ratio": 1.0, "delta_ratio": 1.0, "accuracy_cost_points": 0.0},
        "int8": {"payload_ratio": 3.8, "delta_ratio": 3.93, "accuracy_cost_points": 0.2},
        "int4": {"payload_ratio": 7.0, "delta_ratio": 7.7, "accuracy_cost_points": 0.5},
        "topk": {"payload_ratio": 12.0, "delta_ratio": 15.0, "accuracy_cost_points": 2.5},
    }
    int8, strong = judge(summary)
    assert (int8["met_by_payload"], int8["met_by_delta"]) == ([], ["int8"])
    assert (strong["met_by_payload"], strong["met_by_delta"]) == ([], [])
    summary["topk"]["accuracy_cost_points"] = 1.5
    assert judge(summary)[1]["met_by_payload"] == ["topk"]
