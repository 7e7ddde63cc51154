"""A firmware device that gets no ack re-sends the same update (same seq, same bytes) and the real gateway counts it
once: the gateway's persistent MQTT session queues the sends while it is away, then judges them in order."""

from __future__ import annotations

import time
from pathlib import Path

from fw_device import Device, FirmwareLoop, Observer, device_config, wait_for, write_samples
from micropython_runner import MicroPythonRunner

from flcore.datasets import sensors
from flcore.endpoints import parse_broker_url
from flcore.messages import Task, Up
from flcore.model import ModelSpec
from gateway.node import GatewayNode
from iotfl.broker import Broker

LAYERS = (10, 16, 5)
UP = "iotfl/default/gw/gw0/up/fw0"
STATUS = "iotfl/default/dev/fw0/status"


def make_device(runner: MicroPythonRunner, broker: Broker, folder: Path, **cfg: object) -> Device:
    data = sensors(0, samples=200)
    dev = Device(runner, folder, heap="128K")
    dev.flash()
    write_samples(folder, data.x_train[:24], data.y_train[:24])
    dev.configure(device_config("fw0", broker.port, **cfg))
    return dev


def open_round(broker: Broker, rnd: int = 1, base: int = 0) -> GatewayNode:
    node = GatewayNode("gw0", parse_broker_url(broker.url))
    spec = ModelSpec(LAYERS)
    node.open_sub_round(Task(rnd, base, LAYERS, spec.init(rnd), 0.05, 1, 8, 64, time.time() + 60, 0.1))
    return node


def test_no_ack_means_the_same_seq_again_and_one_count(
    mpy_unix: MicroPythonRunner, mosquitto: Broker, tmp_path: Path
) -> None:
    node = open_round(mosquitto)
    assert node.start(10)  # publishes the retained task and creates the gateway's persistent session
    node.stop()  # the gateway goes away: the device's sends queue in that session, unanswered
    observer = Observer(mosquitto.port, [UP, STATUS])
    dev = make_device(mpy_unix, mosquitto, tmp_path / "fw0", ack_timeout_ms=1500, max_resends=4)
    loop = FirmwareLoop(dev, max_boots=12, sleep_cap=0.2, until=lambda state: state.get("last") == [1, 0])
    try:
        loop.start()
        wait_for(lambda: len(observer.on(UP)) >= 2, timeout=30)
        assert node.start(10)  # back: it gets both sends from its session, in order
        assert loop.join(30), loop.output
    finally:
        loop.stop()
        observer.close()
        node.stop()
    sends = observer.on(UP)
    ups = [Up.decode(p, params=ModelSpec(LAYERS).param_count, topic_dev="fw0") for p in sends]
    assert len(sends) >= 2 and len(set(sends)) == 1  # byte for byte the same update every time
    assert {u.seq for u in ups} == {1} and ups[0].n == 24
    totals = node.totals
    assert totals is not None and totals.k == 1 and totals.devices == {"fw0": 24}
    assert node.counters["accepted"] == 1 and node.counters["duplicate"] == len(sends) - 1
    output = loop.output
    assert "no ack for seq 1 yet: sending it again" in output and "ack accepted for seq 1" in output
    state = dev.state()
    assert state["seq"] == 1 and state["pending"] is None and state["last"] == [1, 0]
    assert observer.last_status(STATUS, state="sleeping").state == "sleeping"


def test_update_survives_a_reset_and_goes_out_again_with_its_seq(
    mpy_unix: MicroPythonRunner, mosquitto: Broker, tmp_path: Path
) -> None:
    # no gateway in the first wake: the retained task is there, nobody acks
    observer = Observer(mosquitto.port, [UP, "iotfl/default/gw/gw0/task"])
    task = Task(1, 0, LAYERS, ModelSpec(LAYERS).init(1), 0.05, 1, 8, 64, time.time() + 60, 0.1)
    observer.publish("iotfl/default/gw/gw0/task", task.encode(), retain=True)
    dev = make_device(mpy_unix, mosquitto, tmp_path / "fw0", ack_timeout_ms=800, max_resends=1)
    node = None
    try:
        first = dev.wake(30)
        assert first[-1].sleep_ms is not None, "\n".join(map(str, first))
        state = dev.state()
        assert state["seq"] == 1 and state["pending"]["seq"] == 1 and state["pending"]["sends"] == 2
        assert "keeping it for the next one" in first[-1].stdout
        # the interpreter is gone (a reset); the next wake finds the stored update and the gateway
        node = open_round(mosquitto)  # the same round the task announced
        assert node.start(10)
        second = dev.wake(30)
        assert "ack accepted for seq 1" in second[-1].stdout, "\n".join(map(str, second))
    finally:
        observer.close()
        if node is not None:
            node.stop()
    sends = observer.on(UP)
    assert len(sends) == 3 and len(set(sends)) == 1
    state = dev.state()
    assert (state["seq"], state["version"], state["pending"], state["last"]) == (1, 0, None, [1, 0])
    assert node.totals is not None and node.totals.k == 1
