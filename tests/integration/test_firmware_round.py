"""Two firmware devices (the unchanged firmware under the real MicroPython, each its own interpreter process waking
from deep sleep) and a simulated fleet train the digits model together for 3 rounds through two real gateways,
a real mosquitto and the real cloud; the firmware's updates are accepted and counted in every round."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
from fw_device import Device, FirmwareLoop, device_config, wait_for, write_samples  # noqa: E402
from micropython_runner import find_runner  # noqa: E402

from cloud.server import running  # noqa: E402
from cloud.settings import CloudSettings  # noqa: E402
from cloud.storage import make_engine, round_aggregates  # noqa: E402
from device_sim.fleet import run_fleet  # noqa: E402
from device_sim.settings import FleetSettings  # noqa: E402
from flcore.partition import dirichlet  # noqa: E402
from gateway.service import run as run_gateway  # noqa: E402
from gateway.settings import GatewaySettings  # noqa: E402
from iotfl.broker import Broker  # noqa: E402
from iotfl.datasets import load  # noqa: E402

pytestmark = pytest.mark.integration

ROUNDS = 3
SIM_DEVICES = 6
FIRMWARE = {"fw0": "gw0", "fw1": "gw1"}
TOKENS = {"gw0": "gw0-secret-token", "gw1": "gw1-secret-token"}


@pytest.fixture(scope="module")
def runner():
    found, reason = find_runner()
    if found is None or found.kind != "unix":
        pytest.skip(f"needs the unix MicroPython via IOTFL_MICROPYTHON (sockets): {reason or 'only wasm found'}")
    return found


@contextmanager
def thread(target, *args, name: str, stop: threading.Event, join: float = 15.0) -> Iterator[threading.Thread]:
    t = threading.Thread(target=target, args=args, name=name, daemon=True)
    t.start()
    try:
        yield t
    finally:
        stop.set()
        t.join(join)


def test_firmware_devices_join_real_rounds(runner, mosquitto: Broker, tmp_path: Path) -> None:
    digits = load("digits", 1)
    # the firmware devices' own shards of the training split (the simulated fleet partitions it on its own)
    shards = dirichlet(digits.y_train, SIM_DEVICES + 2, 0.5, np.random.default_rng(7), min_size=16)
    loops: dict[str, FirmwareLoop] = {}
    for i, (dev_id, gw) in enumerate(FIRMWARE.items()):
        shard = shards[SIM_DEVICES + i][:64]
        dev = Device(runner, tmp_path / dev_id, heap="128K")
        dev.flash()
        write_samples(dev.folder, digits.x_train[shard], digits.y_train[shard])
        dev.configure(
            device_config(
                dev_id,
                mosquitto.port,
                gw=gw,
                max_samples=64,
                task_wait_ms=1500,
                ack_timeout_ms=5000,
                sleep={"min_ms": 200, "max_ms": 1000, "default_ms": 1000, "done_ms": 3_600_000},
                debug=False,
            )
        )
        loops[dev_id] = FirmwareLoop(dev, max_boots=150, sleep_cap=0.5)
    cloud_settings = CloudSettings(
        db=f"sqlite:///{tmp_path / 'cloud.db'}", port=0, gateway_tokens=TOKENS, dataset="digits", seed=1,
        rounds=ROUNDS, round_timeout=60, epochs=1, batch=8, chunk=256, min_gateways=2,
    )  # fmt: skip
    fleet_settings = FleetSettings(
        devices=SIM_DEVICES, gateways=2, broker=mosquitto.url, dataset="digits", alpha=0.5, seed=1, battery=False,
        ram_mix={"class2": 1.0}, ack_timeout=5, run_timeout=120, workers=2,
    )  # fmt: skip
    stop = threading.Event()
    fleet_up = threading.Event()
    started = time.monotonic()
    with running(cloud_settings, digits) as url, ExitStack() as stack:
        for loop in loops.values():
            stack.callback(loop.stop)
            loop.start()
        progress = lambda e: fleet_up.set() if e["event"] == "fleet_connected" else None  # noqa: E731
        stack.enter_context(thread(run_fleet, fleet_settings, digits, stop, progress, name="fleet", stop=stop))
        assert fleet_up.wait(30), "the simulated fleet did not connect"
        # the firmware boards announced themselves (retained status) before the gateways open round 1
        wait_for(lambda: all(loop.boots for loop in loops.values()), timeout=30)
        for gw, token in TOKENS.items():
            settings = GatewaySettings(id=gw, broker=mosquitto.url, cloud=url, token=token,
                                       state_dir=tmp_path / gw, round_timeout=30, poll_interval=0.1)  # fmt: skip
            stack.enter_context(thread(run_gateway, settings, stop, name=gw, stop=stop))
        with httpx.Client(base_url=url, timeout=10) as http:
            status = wait_for(
                lambda: (s := http.get("/api/v1/status").json())["state"] == "done" and s, timeout=150, step=0.5
            )
        assert all(loop.join(30) for loop in loops.values()), "firmware devices did not see done"
    seconds = time.monotonic() - started

    engine = make_engine(cloud_settings.db)
    with Session(engine) as s:
        per_round = {r: round_aggregates(s, r) for r in range(1, ROUNDS + 1)}
    engine.dispose()
    for r, aggs in per_round.items():
        devices = [d for a in aggs for d in a.devices]
        assert set(FIRMWARE) <= set(devices), f"round {r}: firmware updates missing from {devices}"
        assert sum(a.k for a in aggs) == len(devices) == len(set(devices))  # k counts each device once
        assert {a.gw for a in aggs if set(a.devices) & set(FIRMWARE)} == {"gw0", "gw1"}
    assert status["devices_seen"] == SIM_DEVICES + len(FIRMWARE)
    history = status["history"]
    assert [h["round"] for h in history] == list(range(1, ROUNDS + 1))
    assert all(h["k"] == SIM_DEVICES + len(FIRMWARE) for h in history)
    assert history[-1]["accuracy"] > history[0]["accuracy"]
    for loop in loops.values():
        out = loop.output
        assert out.count("ack accepted for seq") == ROUNDS, out
        state = loop.device.state()
        assert (state["seq"], state["version"], state["done"]) == (ROUNDS, ROUNDS, True)
    accuracy = [round(h["accuracy"], 3) for h in history]
    boots = {d: len(loop.boots) for d, loop in loops.items()}
    print(f"\n{ROUNDS} rounds in {seconds:.1f} s, accuracy {accuracy}, firmware boots {boots}")
