"""Every wait of the firmware is bounded: a broker that accepts TCP but never answers, and a broker that dies while
the board waits for its ack, end the wake in bounded time with a retry sleep, and the unacked update goes out
again (same seq) once a broker is back. Real MicroPython, real mosquitto."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from fw_device import Device, Observer, device_config, wait_for, write_samples
from micropython_runner import MicroPythonRunner

from flcore.datasets import sensors
from flcore.endpoints import parse_broker_url
from flcore.messages import Task
from flcore.model import ModelSpec
from gateway.node import GatewayNode
from iotfl.broker import Broker, start_broker

LAYERS = (10, 16, 5)
UP = "iotfl/default/gw/gw0/up/fw0"


def make_device(runner: MicroPythonRunner, port: int, folder: Path, **cfg: object) -> Device:
    data = sensors(0, samples=200)
    dev = Device(runner, folder, heap="128K")
    dev.flash()
    write_samples(folder, data.x_train[:24], data.y_train[:24])
    settings = {"sock_timeout_ms": 500, "connect_retries": 1, "sleep": {"retry_ms": 700}}
    settings.update(cfg)
    dev.configure(device_config("fw0", port, **settings))
    return dev


def test_a_silent_broker_cannot_hang_the_board(mpy_unix: MicroPythonRunner, tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # takes connections and never says a word
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    try:
        dev = make_device(mpy_unix, server.getsockname()[1], tmp_path / "fw0")
        started = time.monotonic()
        boot = dev.boot(20)
        seconds = time.monotonic() - started
    finally:
        stop.set()
        server.close()
        for conn in accepted:
            conn.close()
    assert boot.returncode == 0 and boot.sleep_ms == 700, boot
    assert boot.stdout.count("broker attempt") == 2 and "wake failed: OSError('broker unreachable'" in boot.stdout
    assert len(accepted) == 2 and seconds < 5  # two CONNECTs, each given up after the 500 ms socket timeout


def test_a_broker_lost_while_waiting_for_the_ack(
    mpy_unix: MicroPythonRunner, mosquitto: Broker, tmp_path: Path
) -> None:
    task = Task(1, 0, LAYERS, ModelSpec(LAYERS).init(1), 0.05, 1, 8, 64, time.time() + 60, 0.1)
    observer = Observer(mosquitto.port, [UP])
    observer.publish("iotfl/default/gw/gw0/task", task.encode(), retain=True)
    dev = make_device(mpy_unix, mosquitto.port, tmp_path / "fw0", ack_timeout_ms=5000)
    result: list = []
    waker = threading.Thread(target=lambda: result.append(dev.wake(30)), daemon=True)
    waker.start()
    try:
        wait_for(lambda: observer.on(UP), timeout=20)
        sent = observer.on(UP)[0]
        mosquitto.kill()  # the board is waiting for its ack
        waker.join(20)
        assert not waker.is_alive()
    finally:
        observer.close()
        dev.kill()
    last = result[0][-1]
    assert last.sleep_ms == 700 and "connection lost while sending" in last.stdout, last
    state = dev.state()
    assert state["pending"]["seq"] == 1 and state["seq"] == 1  # kept on flash for the next wake

    broker = start_broker(port=mosquitto.port, prefer="mosquitto", workdir=tmp_path / "broker2")
    node = GatewayNode("gw0", parse_broker_url(broker.url))
    observer = Observer(broker.port, [UP])
    try:
        node.open_sub_round(task)
        assert node.start(10)
        again = dev.wake(30)
        assert "ack accepted for seq 1" in again[-1].stdout, "\n".join(map(str, again))
    finally:
        observer.close()
        node.stop()
        broker.stop()
    assert observer.on(UP) == [sent]  # the very same bytes
    assert node.totals is not None and node.totals.k == 1
