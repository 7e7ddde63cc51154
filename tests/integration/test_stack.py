"""Whole-stack runs: a real mosquitto started by the test, the real cloud, gateways and fleet as processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
from rich.console import Console

from device_sim.population import build_population
from device_sim.settings import FleetSettings
from flcore.model import ModelSpec
from flcore.resources import can_train
from iotfl.datasets import load
from iotfl.demo import follow_rounds, start_stack
from iotfl.demo_settings import DemoSettings

pytestmark = pytest.mark.integration


def test_three_round_demo_learns_and_every_rest_path_answers(mosquitto, tmp_path: Path) -> None:
    settings = DemoSettings(
        devices=12, gateways=3, rounds=3, dataset="digits", alpha=0.5, seed=1, broker=mosquitto.url, round_timeout=20
    )
    stack, cloud, _report = start_stack(settings, tmp_path, Console(quiet=True))
    try:
        status, _seconds = follow_rounds(settings, stack, cloud, Console(quiet=True))
        spec = ModelSpec(load("digits", 1).layers)
        current = httpx.get(f"{cloud}/api/v1/rounds/current").json()

        # status: the contract's keys, three closed rounds, accuracy a fraction that rose
        assert status["state"] == "done" and status["round"] == 3 and status["model_version"] == 3
        assert {g["id"] for g in status["gateways"]} == {"gw0", "gw1", "gw2"}
        assert all(g["rounds_reported"] == 3 for g in status["gateways"])
        # every device whose RAM class can hold the model trained at least once; the others never can
        fleet = build_population(FleetSettings(devices=12, gateways=3, alpha=0.5, seed=1), load("digits", 1).y_train)
        trainable = [p for p in fleet if can_train(spec, p.ram_class, current["batch"])]
        assert 0 < len(trainable) < 12
        assert status["devices_seen"] == len(trainable)
        history = status["history"]
        assert [h["round"] for h in history] == [1, 2, 3]
        for h in history:
            assert set(h) >= {"round", "accuracy", "loss", "k", "n", "bytes_up", "closed_at"}
            assert 0.0 <= h["accuracy"] <= 1.0 and h["k"] >= 1 and h["n"] >= h["k"] and h["bytes_up"] > 0
        assert history[-1]["accuracy"] > history[0]["accuracy"]

        assert current["state"] == "done" and current["layers"] == list(spec.layers)
        assert set(current) >= {
            "round",
            "base",
            "state",
            "deadline",
            "layers",
            "lr",
            "epochs",
            "batch",
            "chunk",
            "min_battery",
            "gateway_rounds",
        }

        r2 = httpx.get(f"{cloud}/api/v1/rounds/2").json()
        assert r2["state"] == "closed" and r2["base"] == 1 and set(r2["gateways"]) == {"gw0", "gw1", "gw2"}
        assert r2["k"] == sum(g["k"] for g in r2["gateways"].values())
        assert r2["n"] == sum(g["n"] for g in r2["gateways"].values())
        assert httpx.get(f"{cloud}/api/v1/rounds/99").status_code == 404

        packed = msgpack.unpackb(httpx.get(f"{cloud}/api/v1/model/latest").content)
        as_json = httpx.get(f"{cloud}/api/v1/model/latest", params={"format": "json"}).json()
        assert packed["version"] == as_json["version"] == 3
        weights = np.frombuffer(packed["w"], dtype="<f4")
        assert weights.size == spec.param_count
        np.testing.assert_allclose(weights, np.asarray(as_json["w"], dtype=np.float32))

        assert httpx.get(f"{cloud}/healthz").status_code == 200
        metrics = httpx.get(f"{cloud}/metrics")
        assert metrics.status_code == 200 and "iotfl_" in metrics.text
        page = httpx.get(f"{cloud}/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx.get(f"{cloud}/docs").status_code == 200
        paths = httpx.get(f"{cloud}/openapi.json").json()["paths"]
        for path in (
            "/api/v1/rounds/current",
            "/api/v1/rounds/{round}",
            "/api/v1/rounds/{round}/aggregates",
            "/api/v1/status",
            "/api/v1/model/latest",
        ):
            assert path in paths, path
    finally:
        stack.stop()


def test_demo_command_writes_the_report(mosquitto, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    flags = "--devices 8 --gateways 2 --rounds 2 --dataset sensors"
    cmd = demo_cmd(flags, "--broker", mosquitto.url, "--json", str(out), "--workdir", str(tmp_path / "w"))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report) >= {
        "config",
        "rounds",
        "final_accuracy",
        "centralized_accuracy",
        "bytes_up_total",
        "bytes_float32_equivalent",
    }
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    for r in report["rounds"]:
        assert set(r) >= {"round", "accuracy", "loss", "k", "n", "bytes_up", "seconds"}
    assert 0 < report["final_accuracy"] <= 1 and 0 < report["centralized_accuracy"] <= 1
    # sensors' model has 261 parameters: float32 costs 1,044 bytes per update against ~400 for int8 + envelope
    assert report["bytes_float32_equivalent"] > 2 * report["bytes_up_total"] > 0
    assert "final accuracy" in done.stdout


def test_demo_runs_on_the_embedded_broker(tmp_path: Path) -> None:
    flags = "--devices 6 --gateways 2 --rounds 2 --dataset sensors --broker embedded"
    cmd = demo_cmd(flags, "--json", str(tmp_path / "r.json"))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "broker: amqtt" in done.stdout
    assert [r["k"] for r in json.loads((tmp_path / "r.json").read_text())["rounds"]] == [6, 6]


def test_ctrl_c_stops_every_part_of_the_demo(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    cmd = demo_cmd("--devices 6 --gateways 2 --rounds 500 --dataset sensors", "--workdir", str(workdir))
    demo = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while "round 2 posted" not in _read(workdir / "gw0.log") and time.monotonic() < deadline:
            assert demo.poll() is None, demo.stdout.read() if demo.stdout else ""
            time.sleep(0.2)
        assert "round 2 posted" in _read(workdir / "gw0.log"), "the demo never got going"
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, out[-2000:]
    assert "interrupted" in out
    # every child (broker, cloud, gateways, fleet) names the work dir on its command line
    left = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True)
    assert left.stdout.strip() == "", f"still running: {left.stdout}"
    assert "stopped" in _read(workdir / "gw1.log")


def demo_cmd(flags: str, *args: str) -> list[str]:
    """``iotfl demo`` with ``flags`` (split on spaces) and ``args``, run as a user would: its own process."""
    return [sys.executable, "-m", "iotfl", "demo", *flags.split(), *args]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
