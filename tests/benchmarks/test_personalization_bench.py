"""Smoke test of benchmarks/personalization.py: a --quick run (one small batched demo with personal heads, then
few-shot new devices) prints its figures and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "personalization.py"

pytestmark = pytest.mark.timeout(600)


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=580
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "last round: personalized" in run.stdout and "few-shot, 10 new devices" in run.stdout
    report = json.loads((tmp_path / "personalization.json").read_text())
    assert report["config"]["devices"] == 10 and report["config"]["sim"] == "batched"
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    for r in report["rounds"]:
        assert 0.0 <= r["l_accuracy"] <= 1.0 and 0.0 <= r["p_accuracy"] <= 1.0 and 1 <= r["p_devices"] <= 10
    personal, few = report["personal"], report["few_shot"]
    assert personal["gain"] == pytest.approx(personal["personalized"] - personal["global"])
    assert few["devices"] == 10 and few["shots"] == 10 and few["gain"] == pytest.approx(few["adapted"] - few["global"])


def test_new_devices_are_disjoint_and_skewed() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from personalization import new_devices
    finally:
        sys.path.remove(str(BENCHMARKS))
    y = np.repeat(np.arange(10), 40)
    made = new_devices(y, 20, 10, 0.1, seed=0)
    assert len(made) == 20
    for shots, judged in made:
        assert len(shots) == 10 and len(judged) >= 1 and not set(shots) & set(judged)
    # Dirichlet(0.1) over 10 classes: most devices see two or three classes at most.
    assert np.median([len(set(y[np.concatenate(d)])) for d in made]) <= 3
