"""A small fleet over a real mosquitto, the test playing two gateways: rounds, FedAvg, done, and the report."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sim_probe import Probe

from device_sim.fleet import FleetReport, run_fleet
from device_sim.settings import FleetSettings
from flcore.datasets import sensors
from flcore.fedavg import WeightedSum, apply
from flcore.messages import Ack, Status, Task, Up
from flcore.model import ModelSpec
from flcore.topics import GatewayTopics, device_of_status
from iotfl.broker import Broker

pytestmark = pytest.mark.timeout(90)

FLEET = "f"
DATA = sensors(0)
SPEC = ModelSpec(DATA.layers)


def _gateway_round(
    probe: Probe, gws: list[GatewayTopics], devices: set[str], rnd: int, w: np.ndarray, min_battery: float
) -> tuple[WeightedSum, dict[str, int], dict[str, str]]:
    """Publish the task to every gateway, ack every update, until each device answered (update or skip)."""
    for gw in gws:
        task = Task(rnd, rnd - 1, SPEC.layers, w, 0.1, 2, 8, 64, time.time() + 60, min_battery)
        probe.publish(gw.task, task.encode(), retain=True)
    acc, sizes, skips = WeightedSum(SPEC.param_count), {}, {}
    answered: set[str] = set()
    deadline = time.monotonic() + 30
    while answered != devices:
        assert time.monotonic() < deadline, f"round {rnd}: no answer from {sorted(devices - answered)}"
        msg = probe.expect(lambda m: True, timeout=max(0.1, deadline - time.monotonic()))
        dev = device_of_status(FLEET, msg.topic)
        if dev is not None:
            status = Status.decode(msg.payload)
            if status.skip and status.round == rnd:
                skips[dev] = status.skip
                answered.add(dev)
            continue
        gw = next(g for g in gws if g.device_of(msg.topic))
        up = Up.decode(msg.payload, params=SPEC.param_count, topic_dev=gw.device_of(msg.topic))
        probe.publish(gw.ack(up.dev), Ack(up.round, up.seq, "accepted").encode())
        if up.round == rnd and up.dev not in answered:
            acc.add(up.delta(), up.n, up.loss)
            sizes[up.dev] = len(msg.payload)
            answered.add(up.dev)
    return acc, sizes, skips


def test_fleet_trains_over_rounds_and_reports(mosquitto: Broker, probe_factory: Callable[..., Probe]) -> None:
    gws = [GatewayTopics(FLEET, "gw0"), GatewayTopics(FLEET, "gw1")]
    probe = probe_factory([g.up_wildcard for g in gws] + [f"iotfl/{FLEET}/dev/+/status"])
    settings = FleetSettings(
        broker=mosquitto.url,
        fleet=FLEET,
        devices=6,
        gateways=2,
        seed=1,
        alpha=1.0,
        ram_mix={"class0": 1, "constrained": 5},
        battery_start=(0.2, 0.2),
        recharge=0.0,
        ack_timeout=5.0,
        run_timeout=60,
    )
    stop = threading.Event()
    events: list[dict[str, Any]] = []
    result: list[FleetReport] = []
    runner = threading.Thread(target=lambda: result.append(run_fleet(settings, DATA, stop, events.append)))
    runner.start()
    try:
        devices = {f"d{i:04d}" for i in range(6)}
        deadline = time.monotonic() + 15
        while not any(e["event"] == "fleet_connected" for e in events):
            assert time.monotonic() < deadline, "fleet did not connect"
            time.sleep(0.05)
        w = SPEC.init(0)
        acc0, _ = SPEC.evaluate(w, DATA.x_test, DATA.y_test)
        sent: dict[int, dict[str, int]] = {}
        skipped: dict[int, dict[str, str]] = {}
        for rnd in (1, 2, 3):
            acc, sent[rnd], skipped[rnd] = _gateway_round(probe, gws, devices, rnd, w, min_battery=0.1)
            if acc.n:
                w = apply(w, acc)
        acc3, _ = SPEC.evaluate(w, DATA.x_test, DATA.y_test)
        for gw in gws:
            done = Task(4, 3, SPEC.layers, w, 0.1, 2, 8, 64, time.time(), 0.1, done=True)
            probe.publish(gw.task, done.encode(), retain=True)
        runner.join(30)
        assert not runner.is_alive(), "run_fleet did not return after done=true"
    finally:
        stop.set()
        runner.join(10)
    report = result[0]
    assert not report.stopped
    assert acc3 > acc0 + 0.15, (acc0, acc3)
    # 0.2 charge, no recharge: 0.2 >= 0.1 + 0.052 trains once (0.148 left), then every round is a battery skip.
    assert [len(sent[r]) for r in (1, 2, 3)] == [5, 0, 0]
    assert list(skipped[1].values()) == ["ram"]
    assert sorted(skipped[2].values()) == ["battery"] * 5 + ["ram"]
    assert report.trainings == 5
    assert report.skips == {"battery": 10, "ram": 3}
    assert report.bytes_up == sum(sent[1].values())
    by_round = report.battery_by_round
    assert sorted(by_round) == [1, 2, 3]
    assert [by_round[r]["trained"] for r in (1, 2, 3)] == [5, 0, 0]
    assert by_round[1]["devices"] == 6
    assert by_round[1]["min"] == pytest.approx(0.148) and by_round[3]["min"] == pytest.approx(0.144)
    assert by_round[2]["mean"] < by_round[1]["mean"]  # skip statuses cost a message each
    as_dict = report.to_dict()
    assert as_dict["bytes_up"] == report.bytes_up and len(as_dict["per_device"]) == 6
    assert {e["event"] for e in events} >= {
        "connected",
        "fleet_connected",
        "up",
        "ack",
        "skip",
        "done",
        "fleet_finished",
    }


def test_fleet_returns_on_stop_and_raises_without_a_broker(mosquitto: Broker) -> None:
    settings = FleetSettings(broker=mosquitto.url, fleet=FLEET, devices=3, gateways=1)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    report = run_fleet(settings, DATA, stop)
    assert report.stopped and time.monotonic() - started < 10
    assert report.trainings == 0 and len(report.devices) == 3
    mosquitto.stop()
    dead = FleetSettings(broker=mosquitto.url, devices=2, connect_retries=1)
    with pytest.raises(ConnectionError, match="cannot connect to the MQTT broker"):
        run_fleet(dead, DATA, threading.Event())
