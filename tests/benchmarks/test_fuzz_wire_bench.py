"""Smoke test of benchmarks/fuzz_wire.py: a --quick run prints its table, writes its JSON and exits 0; a decoder
that crashes is counted and turns the exit code to 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.fuzz_wire import TARGETS, Target, fuzz

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_wire.py"


def test_quick_run_reports_every_target_without_crashes(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Wire decoder fuzzing" in run.stdout and "Collector.ingest" in run.stdout
    report = json.loads(out.read_text())
    assert report["total_crashes"] == 0
    assert [t["decoder"] for t in report["targets"]] == [t.name for t in TARGETS]
    assert report["total_inputs"] >= 600
    for target in report["targets"]:
        assert target["inputs"] == target["accepted"] + sum(target["rejected"].values())


def test_a_crashing_decoder_is_counted_not_raised() -> None:
    def boom(_topic: str, data: bytes) -> str:
        if len(data) > 3:
            raise IndexError("boom")
        return "accepted"

    row = fuzz(Target("boom", "up", boom), 50)
    assert row.inputs == 50 and row.crashes > 0
    assert row.crash_samples[0]["error"] == "IndexError: boom"
