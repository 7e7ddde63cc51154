"""A board's whole loop under the 32-bit MicroPython with a capped heap, against a real mosquitto and the real
gateway's MQTT side (``GatewayNode``): connect, receive the task, train on 32 samples, publish the int8 update,
get the ack, deep-sleep. The firmware runs as ``iotfl flash`` installs it (``.mpy`` modules, umqtt.simple from
micropython-lib), phase by phase (one soft restart per phase); the live heap after each stage is printed.
Acceptance: the digits model [64,32,10] completes under -X heapsize=64K, the tutorial model [10,16,5] under 32K."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fw_device import Boot, Device, Observer, device_config, write_samples
from micropython_runner import MicroPythonRunner

from flcore.datasets import sensors
from flcore.endpoints import parse_broker_url
from flcore.messages import Status, Task
from flcore.model import ModelSpec
from gateway.node import GatewayNode
from iotfl.broker import Broker
from iotfl.datasets import load


def completed(boots: list[Boot], dev: Device) -> bool:
    """The wake ended in a deep sleep after the gateway acked the update, with no failure on the way."""
    state = dev.state()
    return (
        bool(boots)
        and boots[-1].sleep_ms is not None
        and not any("wake failed" in b.stdout or b.returncode != 0 for b in boots)
        and state.get("last") == [1, 0]
        and state.get("pending") is None
    )


def peak(boots: list[Boot]) -> int:
    return max(b.mem().get("peak", 0) for b in boots)


def run_loop(
    runner: MicroPythonRunner, broker: Broker, folder: Path, heap: str, x: np.ndarray, y: np.ndarray
) -> tuple[list[Boot], Device]:
    dev = Device(runner, folder, heap=heap)
    dev.flash()
    write_samples(folder, x, y)
    dev.configure(device_config("fw0", broker.port))
    return dev.wake(60), dev


@pytest.fixture
def gateway(mosquitto: Broker):
    nodes: list[GatewayNode] = []

    def open_round(layers: tuple[int, ...], deadline_in: float = 30.0) -> tuple[GatewayNode, Task]:
        node = GatewayNode("gw0", parse_broker_url(mosquitto.url))
        task = Task(1, 0, layers, ModelSpec(layers).init(0), 0.05, 1, 8, 256, time.time() + deadline_in, 0.1)
        node.open_sub_round(task)
        assert node.start(10)
        nodes.append(node)
        return node, task

    yield open_round
    for node in nodes:
        node.stop()


def test_digits_loop_completes_in_64k(mpy_unix: MicroPythonRunner, mosquitto: Broker, gateway, tmp_path: Path) -> None:
    digits = load("digits", 0)
    node, task = gateway((64, 32, 10), deadline_in=30)
    started = time.time()
    boots, dev = run_loop(mpy_unix, mosquitto, tmp_path / "fw0", "64K", digits.x_train[:32], digits.y_train[:32])
    ended = time.time()
    seconds = ended - started
    assert completed(boots, dev), "\n".join(map(str, boots))
    totals = node.totals
    assert totals is not None and totals.k == 1 and totals.devices == {"fw0": 32}
    assert node.counters["accepted"] == 1
    state = dev.state()
    assert (state["seq"], state["version"]) == (1, 0)
    # the wake sleeps until the task's deadline plus the config's 500 ms margin, as the board's clock saw it
    deadline = task.deadline
    assert (deadline - ended) * 1000 + 450 <= boots[-1].sleep_ms <= (deadline - started) * 1000 + 550
    stages = {tag: v for b in boots for tag, v in b.mem().items()}
    print(f"\ndigits [64,32,10] whole loop in {seconds:.2f} s over {len(boots)} boots under -X heapsize=64K; "
          f"live heap by stage {stages}; peak {peak(boots)} bytes")  # fmt: skip
    assert peak(boots) <= 64_000


def test_tutorial_loop_completes_in_32k(
    mpy_unix: MicroPythonRunner, mosquitto: Broker, gateway, tmp_path: Path
) -> None:
    data = sensors(0, samples=200)
    node, _ = gateway((10, 16, 5))
    boots, dev = run_loop(mpy_unix, mosquitto, tmp_path / "at32", "32K", data.x_train[:32], data.y_train[:32])
    assert completed(boots, dev), "\n".join(map(str, boots))
    assert node.totals is not None and node.totals.k == 1 and node.counters["accepted"] == 1
    # the smallest heap (1 KB steps) on which the whole loop completes: each try is a fresh board (the gateway
    # answers the repeats with "duplicate", an ack all the same)
    lo, hi = 24, 32
    while hi - lo > 1:
        mid = (lo + hi) // 2
        folder = tmp_path / f"at{mid}"
        tried, dev = run_loop(mpy_unix, mosquitto, folder, f"{mid}K", data.x_train[:32], data.y_train[:32])
        lo, hi = (lo, mid) if completed(tried, dev) else (mid, hi)
        shutil.rmtree(folder)
    stages = {tag: v for b in boots for tag, v in b.mem().items()}
    print(f"\ntutorial [10,16,5] whole loop under -X heapsize=32K over {len(boots)} boots; live heap by stage "
          f"{stages}; peak {peak(boots)} bytes; smallest heap {hi}K")  # fmt: skip


def test_a_heap_too_small_for_the_training_declines_the_round(
    mpy_unix: MicroPythonRunner, mosquitto: Broker, gateway, tmp_path: Path
) -> None:
    digits = load("digits", 0)
    gateway((64, 32, 10))
    dev = Device(mpy_unix, tmp_path / "fw0", heap="64K")
    dev.flash()
    write_samples(dev.folder, digits.x_train[:200], digits.y_train[:200])  # 51 KB of samples: more than fits
    dev.configure(device_config("fw0", mosquitto.port, max_samples=200))
    observer = Observer(mosquitto.port, ["iotfl/default/dev/fw0/status"])
    try:
        boots = dev.wake(60)
    finally:
        observer.close()
    text = "\n".join(b.stdout for b in boots)
    assert "out of memory training round 1 - skipping it" in text and boots[-1].sleep_ms is not None, text
    statuses = [Status.decode(p) for p in observer.on("iotfl/default/dev/fw0/status")]
    assert (statuses[-1].round, statuses[-1].sub, statuses[-1].skip) == (1, 0, "ram")
    assert dev.state()["last"] == [1, 0] and dev.state()["seq"] == 0
