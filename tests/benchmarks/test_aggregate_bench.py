"""Smoke test of benchmarks/aggregate.py: a --quick run prints its table and writes a JSON of the documented shape;
our weighted mean agrees with Flower's when flwr is installed (the `benchmarks` extra), else its rows are skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.aggregate import load_flower, ours, workload
from flcore.messages import Up

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "aggregate.py"


def test_quick_run_writes_a_sane_report(tmp_path: Path) -> None:
    out = tmp_path / "aggregate.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Aggregation of 100 digits updates" in run.stdout
    report = json.loads(out.read_text())
    assert report["config"]["updates"] == 100 and report["params"] == 2410
    assert 2400 < report["payload_bytes"] < 2700
    names = [r["name"] for r in report["rows"]]
    assert names[:3] == ["iotfl", "iotfl sum only", "gateway ingest"]
    for row in report["rows"]:
        assert row["updates_per_s"] > 0 and len(row["seconds"]) == 2
    if load_flower() is None:
        assert report["flower"] is None and report["ratio"] is None and "flwr is not installed" in run.stdout
    else:
        assert names[3:] == ["Flower + its decode", "Flower"]
        assert report["ratio"] > 0 and report["met"] == (report["ratio"] >= 1.0)
        assert report["max_abs_diff"] < 1e-6


def test_our_mean_is_the_sample_weighted_mean_of_the_dequantized_updates() -> None:
    w = workload(70, seed=3)  # more than one block of int8 updates
    ups = [Up.decode(p, params=w.spec.param_count) for p in w.payloads]
    n = np.array([u.n for u in ups], dtype=np.float64)
    expected = (n[:, None] * np.stack([u.delta() for u in ups]).astype(np.float64)).sum(axis=0) / n.sum()
    np.testing.assert_allclose(ours(w), expected, rtol=1e-6, atol=1e-9)
