"""Device faults injected by the fleet (``FleetSettings.chaos``): stragglers from the start, dropouts mid-round."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sim_probe import Probe

from device_sim.device import SLOW_MARGIN
from device_sim.fleet import FleetReport, run_fleet
from device_sim.settings import FleetSettings
from flcore.chaos import pick
from flcore.datasets import sensors
from flcore.messages import Ack, Task, Up
from flcore.model import ModelSpec
from flcore.topics import GatewayTopics
from iotfl.broker import Broker

pytestmark = pytest.mark.timeout(60)

FLEET = "cf"
GW = GatewayTopics(FLEET, "gw0")
DATA = sensors(0)
SPEC = ModelSpec(DATA.layers)
DEVICES = [f"d{i:04d}" for i in range(4)]


def _collect(probe: Probe, rnd: int, want: int, timeout: float) -> dict[str, float]:
    """Ack every ``up`` of round ``rnd`` as accepted until ``want`` devices sent one; their arrival times."""
    arrived: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(arrived) < want:
        msg = probe.expect(lambda m: GW.device_of(m.topic) is not None, timeout=max(0.1, deadline - time.monotonic()))
        up = Up.decode(msg.payload, params=SPEC.param_count)
        probe.publish(GW.ack(up.dev), Ack(up.round, up.seq, "accepted").encode())
        if up.round == rnd:
            arrived.setdefault(up.dev, time.time())
    return arrived


def test_slow_devices_straggle_and_dropped_devices_vanish_mid_round(
    mosquitto: Broker, probe_factory: Callable[..., Probe]
) -> None:
    probe = probe_factory([GW.up_wildcard])
    settings = FleetSettings(
        broker=mosquitto.url,
        fleet=FLEET,
        devices=4,
        gateways=1,
        seed=3,
        battery=False,
        ram_mix={"constrained": 1},
        chaos="slow-devices:25%,drop-devices:50%@round2",
    )
    events: list[dict[str, Any]] = []
    stop = threading.Event()
    result: list[FleetReport] = []
    runner = threading.Thread(target=lambda: result.append(run_fleet(settings, DATA, stop, events.append)))
    runner.start()
    try:
        deadline = time.monotonic() + 15
        while not any(e["event"] == "fleet_connected" for e in events):
            assert time.monotonic() < deadline, "fleet did not connect"
            time.sleep(0.05)
        slow = pick(DEVICES, 0.25, 3, "slow-devices:0")
        task_deadline = time.time() + 1.5
        probe.publish(GW.task, Task(1, 0, SPEC.layers, SPEC.init(0), 0.1, 1, 8, 64, task_deadline, 0.1).encode(), True)
        first = _collect(probe, 1, 4, timeout=15)
        assert all(first[d] >= task_deadline + SLOW_MARGIN - 0.05 for d in slow)
        assert all(first[d] < task_deadline for d in set(DEVICES) - set(slow))

        probe.publish(
            GW.task, Task(2, 1, SPEC.layers, SPEC.init(1), 0.1, 1, 8, 64, time.time() + 60, 0.1).encode(), True
        )
        _collect(probe, 2, 1, timeout=10)  # the first accepted update of round 2 fires the dropout
        time.sleep(1)
        done = Task(3, 2, SPEC.layers, SPEC.init(2), 0.1, 1, 8, 64, time.time(), 0.1, done=True)
        probe.publish(GW.task, done.encode(), retain=True)
        runner.join(20)
        assert not runner.is_alive(), "run_fleet waited for devices that vanished"
    finally:
        stop.set()
        runner.join(10)
    report = result[0]
    assert not report.stopped
    injected = [e for e in report.chaos if e["injected"]]
    assert [e["fault"] for e in injected] == ["slow-devices:25%@round1", "drop-devices:50%@round2"]
    assert injected[0]["devices"] == slow
    dropped = injected[1]["devices"]
    assert len(dropped) == 2 and injected[1]["trigger"] == "first accepted update of round 2"
    assert sorted(d.dev for d in report.devices if d.vanished) == dropped
    assert [e["event"] for e in events].count("chaos") == 2
    as_dict = report.to_dict()
    assert as_dict["chaos"] == report.chaos
    assert {d["dev"] for d in as_dict["per_device"] if d["vanished"]} == set(dropped)
    assert all(d["updates"][0][:2] == [1, 0] for d in as_dict["per_device"])


def test_the_fleet_refuses_process_faults() -> None:
    with pytest.raises(ValueError, match="only `iotfl demo --chaos`"):
        FleetSettings(chaos="kill-gateway:gw0@0.5")
    assert FleetSettings(chaos="drop-devices:30%", rounds=10).chaos_plan().faults[0].when.round == 5
    assert FleetSettings(chaos=" ").chaos is None
