"""benchmarks/learning.py: the demo options of a cell, the per-cell summary and table, and a --quick run through
the real stack that writes the JSON, the markdown table and the plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.learning import (
    SERVER_PARAMS,
    demo_options,
    earlier_runs,
    markdown,
    rounds_to,
    server_params,
    summarize,
)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "learning.py"
CONFIG = {"devices": 100, "gateways": 5, "rounds": 50, "select": 0.2, "round_timeout": 5.0}


def run(opt: str, seed: int, final: float | None, curve: list[float], central: float = 0.96) -> dict:
    row = {"dataset": "digits", "alpha": 0.5, "optimizer": opt, "seed": seed, "final_accuracy": final}
    if final is None:
        return {**row, "error": "demo exited with 1"}
    reach = {"rounds_to_target": rounds_to(curve, 0.9 * central), "rounds_to_90": rounds_to(curve, 0.9)}
    return {**row, "centralized_accuracy": central, **reach, "accuracy_by_round": curve}


def test_options_pass_the_server_flags_only_where_they_differ_from_the_demo_default() -> None:
    config = {**CONFIG, "server_params": {o: server_params(o, {}) for o in SERVER_PARAMS}}
    fedavg = demo_options("digits", 0.5, "fedavg", 1, config)
    assert fedavg == [
        *("--sim", "batched", "--devices", "100", "--gateways", "5", "--rounds", "50", "--dataset", "digits"),
        *("--alpha", "0.5", "--seed", "1", "--no-battery", "--round-timeout", "5", "--select", "0.2"),
    ]
    adam = demo_options("har", 100.0, "fedadam", 0, {**config, "select": 1.0})
    assert adam[adam.index("--alpha") + 1] == "100" and "--select" not in adam
    assert adam[adam.index("--round-timeout") + 2 :] == [
        *("--server-opt", "fedadam", "--server-lr", "0.03", "--server-momentum", "0.8"),
        *("--server-beta2", "0.99", "--server-eps", "0.001"),
    ]


def test_overrides_apply_to_every_optimizer_but_fedavg() -> None:
    assert server_params("fedavg", {"lr": 0.5}) == {"lr": 1.0}
    assert server_params("fedavgm", {"lr": 0.5}) == {**SERVER_PARAMS["fedavgm"], "lr": 0.5}


def test_rounds_to_is_the_first_round_at_the_target() -> None:
    assert rounds_to([0.5, 0.85, 0.9, 0.8, 0.95], 0.9) == 3
    assert rounds_to([0.5, None, 0.6], 0.9) is None


def test_summary_takes_mean_std_gap_and_rounds_over_the_seeds_and_marks_failed_cells() -> None:
    results = [
        run("fedavg", 0, 0.90, [0.5, 0.8, 0.9], central=0.96),  # 0.864 reached at round 3
        run("fedavg", 1, 0.80, [0.6, 0.9, 0.8], central=0.94),  # 0.846 reached at round 2
        run("fedadam", 0, 0.95, [0.7, 0.95], central=0.96),
        run("fedadam", 1, None, []),
        run("fedyogi", 0, 0.7, [0.6, 0.7], central=0.96),  # never reaches 0.864
    ]
    fedavg, fedadam, fedyogi = summarize(results)
    assert fedavg["seeds"] == 2 and fedavg["final"] == pytest.approx(0.85)
    assert fedavg["std"] == pytest.approx(0.0707107, abs=1e-6)
    assert fedavg["centralized"] == pytest.approx(0.95) and fedavg["gap"] == pytest.approx(0.10)
    assert fedavg["rounds_to_target"] == pytest.approx(2.5) and fedavg["reached"] == 2
    assert fedavg["rounds_to_90"] == pytest.approx(2.5) and fedavg["reached_90"] == 2
    assert fedavg["curve"] == pytest.approx([0.55, 0.85, 0.85])
    assert fedadam["final"] is None and fedadam["rounds_to_target"] is None
    assert fedyogi["rounds_to_target"] is None and fedyogi["reached"] == 0 and fedyogi["std"] == 0.0
    assert fedadam["rounds_to_90"] is None
    table = markdown([fedavg, fedadam, fedyogi], "setting", 3, {"fedavg": {"lr": 1.0}})
    assert table.splitlines()[2] == "Server parameters: fedavg η = 1."
    assert "| digits | 0.5 | fedavg | 85.0 ± 7.1 | 95.0 | +10.0 | 2.5 | 2.5 |" in table
    assert "| digits | 0.5 | fedadam | — | — | — | — | — |" in table
    assert "| digits | 0.5 | fedyogi | 70.0 | 96.0 | +26.0 | > 3 | > 3 |" in table


def test_resume_keeps_finished_runs_of_the_same_config_and_server_parameters(tmp_path: Path) -> None:
    params = {"fedavg": {"lr": 1.0}, "fedadam": SERVER_PARAMS["fedadam"]}
    config = {**CONFIG, "battery": False, "sim": "batched", "server_params": params}
    runs = [run("fedavg", 0, 0.9, [0.9]), run("fedadam", 0, 0.95, [0.95]), run("fedadam", 1, None, [])]
    path = tmp_path / "learning.json"
    path.write_text(json.dumps({"config": config, "results": runs}))
    assert list(earlier_runs(path, config)) == [("digits", 0.5, "fedavg", 0), ("digits", 0.5, "fedadam", 0)]
    other_eta = {**config, "server_params": {**params, "fedadam": {**params["fedadam"], "lr": 0.05}}}
    assert list(earlier_runs(path, other_eta)) == [("digits", 0.5, "fedavg", 0)]
    assert earlier_runs(path, {**config, "rounds": 20}) == {}
    assert earlier_runs(tmp_path / "none.json", config) == {}


def test_bad_lists_are_a_clear_error(tmp_path: Path) -> None:
    for bad in (["--alphas", "0.5,x"], ["--optimizers", "sgd"], ["--seeds", ","], ["--alphas", "0"]):
        run_ = subprocess.run(
            [sys.executable, str(SCRIPT), *bad, "--out", str(tmp_path)], capture_output=True, text=True
        )
        assert run_.returncode == 2 and "Traceback" not in run_.stderr, bad
        assert "Invalid value" in run_.stderr, bad


@pytest.mark.timeout(600)
def test_quick_run_writes_the_table_and_the_plot(tmp_path: Path) -> None:
    run_ = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True, text=True, timeout=580
    )
    assert run_.returncode == 0, run_.stdout + run_.stderr
    report = json.loads((tmp_path / "learning.json").read_text())
    assert report["config"]["devices"] == 10 and report["config"]["sim"] == "batched"
    results = report["results"]
    assert [(r["dataset"], r["optimizer"]) for r in results] == [("sensors", "fedavg"), ("sensors", "fedadam")]
    for r in results:
        assert len(r["accuracy_by_round"]) == 3 and 0.0 <= r["final_accuracy"] <= 1.0
        assert 0.5 < r["centralized_accuracy"] <= 1.0
    assert [s["optimizer"] for s in report["summary"]] == ["fedavg", "fedadam"]
    table = (tmp_path / "learning.md").read_text()
    assert "| sensors | 0.5 | fedadam |" in table
    assert (tmp_path / "learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
