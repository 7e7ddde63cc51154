"""``iotfl demo --dp-clip C --dp-noise Z`` against a real mosquitto: a small run completes, its report states a
finite ε > 0 for the updates the busiest device sent, and the devices kept their training loss to themselves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import create_engine, select

from cloud.storage import AggregateRow
from iotfl.datasets import load
from iotfl.demo import run_demo
from iotfl.demo_settings import DemoSettings
from iotfl.privacy import epsilon

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROUNDS = 3


def test_dp_demo_reports_epsilon_and_completes(tmp_path: Path) -> None:
    settings = DemoSettings(devices=10, gateways=2, rounds=ROUNDS, dataset="sensors", seed=0, broker="mosquitto",
                            round_timeout=10.0, dp_clip=0.5, dp_noise=1.0)  # fmt: skip
    out = tmp_path / "dp.json"
    code = run_demo(settings, load("sensors", 0), out, tmp_path / "run", Console(quiet=True))
    assert code == 0 and out.exists(), f"the demo failed; logs in {tmp_path / 'run'}"
    report = json.loads(out.read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3] and all(r["k"] >= 1 for r in report["rounds"])
    assert (report["config"]["dp_clip"], report["config"]["dp_noise"], report["config"]["dp_delta"]) == (0.5, 1.0, 1e-5)

    privacy = report["privacy"]
    assert set(privacy) >= {"epsilon", "delta", "noise_multiplier", "clip", "rounds", "sampling_rate"}
    assert math.isfinite(privacy["epsilon"]) and privacy["epsilon"] > 0
    assert privacy["epsilon_replace"] > privacy["epsilon"]
    trainings = [d["trainings"] for d in report["fleet"]["per_device"]]
    assert privacy["releases"] == max(trainings) and 1 <= privacy["releases"] <= ROUNDS
    assert privacy["epsilon"] == pytest.approx(epsilon(1.0, privacy["releases"], 1e-5))
    assert (privacy["clip"], privacy["noise_multiplier"], privacy["delta"]) == (0.5, 1.0, 1e-5)
    assert privacy["rounds"] == ROUNDS and privacy["sampling_rate"] == 1.0
    # `iotfl fleet --report` (which the demo ran) states the same ε for the same updates
    fleet_privacy = json.loads((tmp_path / "run" / "fleet.json").read_text())["privacy"]
    assert (fleet_privacy["epsilon"], fleet_privacy["releases"]) == (privacy["epsilon"], privacy["releases"])

    # every noised update was accepted, and none carried its training loss (which the noise does not cover)
    assert all("rejected" not in d["acks"] for d in report["fleet"]["per_device"])
    engine = create_engine(f"sqlite:///{tmp_path / 'run' / 'cloud.db'}")
    try:
        with engine.connect() as conn:
            losses = [float(x) for x in conn.execute(select(AggregateRow.loss)).scalars()]
    finally:
        engine.dispose()
    assert len(losses) == 2 * ROUNDS and losses == [0.0] * len(losses)
