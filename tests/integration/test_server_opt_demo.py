"""``iotfl demo --sim batched --server-opt fedadam --select 0.5`` through the real stack (broker, cloud, gateways,
fleet over MQTT and HTTP): all rounds close, about half the devices train each round, and the report records the
server optimizer and the selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iotfl.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DEVICES, ROUNDS = 20, 3


def test_fedadam_with_half_the_devices_selected(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    flags = ["--sim", "batched", "--devices", str(DEVICES), "--gateways", "2", "--rounds", str(ROUNDS)]
    flags += ["--server-opt", "fedadam", "--select", "0.5", "--no-battery", "--round-timeout", "20"]
    result = CliRunner().invoke(app, ["demo", *flags, "--json", str(out), "--workdir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    config = report["config"]
    assert (config["server_opt"], config["server_lr"], config["select"]) == ("fedadam", 0.05, 0.5)
    ks = [r["k"] for r in report["rounds"]]
    assert len(ks) == ROUNDS and all(0 < k < DEVICES for k in ks)
    # Each device's draw is its own coin: about half of the 60 device-rounds, well inside binomial noise.
    assert 0.3 * DEVICES * ROUNDS <= sum(ks) <= 0.7 * DEVICES * ROUNDS
    assert report["final_accuracy"] is not None
