"""Reconnect storm: 300 simulated devices lose their broker (kill -9) and meet it again on the same port.

The test runs its own mosquitto (not the shared fixture) because it needs the broker's connection log: it counts
``New client connected … as <client id>`` per client id and the ``already connected, closing old connection``
lines a client-id collision (a kick loop) would write.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_sim.connection import client_id
from device_sim.fleet import run_fleet
from device_sim.settings import FleetSettings
from flcore.datasets import sensors
from iotfl.broker import free_port, mosquitto_config, mosquitto_path, wait_for_port

pytestmark = pytest.mark.timeout(120)

DEVICES = 300
FLEET = "storm"
CONNECTED = re.compile(r"New client connected from \S+ as (\S+) ")


class LoggedBroker:
    """mosquitto on a fixed port with connection messages logged to a file; kill -9 and restart in place."""

    def __init__(self, workdir: Path):
        exe = mosquitto_path()
        if exe is None:
            pytest.fail("mosquitto is not installed: run `apt-get install -y mosquitto`")
        self.exe = exe
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(mosquitto_config(self.port) + "log_type notice\nconnection_messages true\n")
        self.logs: list[Path] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.workdir / f"broker-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 10, self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_text(self, index: int) -> str:
        return self.logs[index].read_text(errors="replace")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LoggedBroker]:
    b = LoggedBroker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


def test_three_hundred_devices_come_back_spread_out_and_without_kick_loops(broker: LoggedBroker) -> None:
    settings = FleetSettings(
        broker=f"mqtt://127.0.0.1:{broker.port}",
        fleet=FLEET,
        devices=DEVICES,
        gateways=3,
        dataset="sensors",
        connect_stagger=0.0,
        connect_timeout=60,
        workers=1,
    )
    connects: dict[str, list[float]] = {}
    lock = threading.Lock()
    online = threading.Event()

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "connected":
            with lock:
                connects.setdefault(event["dev"], []).append(time.monotonic())
        elif event["event"] == "fleet_connected":
            online.set()

    stop = threading.Event()
    reports: list[Any] = []
    runner = threading.Thread(target=lambda: reports.append(run_fleet(settings, sensors(0), stop, progress)))
    runner.start()
    try:
        assert online.wait(90), "the fleet never came online"
        with lock:
            assert len(connects) == DEVICES and all(len(v) == 1 for v in connects.values())

        broker.kill()
        killed = time.monotonic()
        time.sleep(1.0)  # a supervisor's restart delay: every device fails a retry or two meanwhile
        broker.start()  # same port, same config
        restarted = time.monotonic()

        def back() -> list[float]:
            with lock:
                return sorted(v[1] - restarted for v in connects.values() if len(v) >= 2)

        deadline = restarted + 30
        while len(back()) < DEVICES and time.monotonic() < deadline:
            time.sleep(0.2)
        times = back()
        time.sleep(2)  # a kick loop would show as further connects now
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive()

    within = sum(t <= 30 for t in times)
    buckets = Counter(int(t / 0.05) for t in times)
    print(
        f"\nbroker down {restarted - killed:.2f} s; {within}/{DEVICES} devices back within 30 s; "
        f"median {times[len(times) // 2]:.2f} s, p99 {times[int(len(times) * 0.99) - 1]:.2f} s, "
        f"last {times[-1]:.2f} s; busiest 50 ms slot {max(buckets.values())} connects"
    )
    assert within >= 0.99 * DEVICES
    # Jitter: the comeback is spread out, not one wave at the instants a fixed 1 s / 2 s / 4 s schedule gives.
    assert max(buckets.values()) < 0.2 * DEVICES
    assert times[-1] - times[0] > 1.0

    # No kick loops: every client id connected exactly once to the restarted broker, and no session was taken over.
    log = broker.log_text(1)
    per_id = Counter(CONNECTED.findall(log))
    ours = {client_id(FLEET, dev) for dev in connects}
    assert {cid for cid in per_id if cid.startswith(f"iotfl-sim-{FLEET}-")} <= ours
    assert max(per_id[cid] for cid in ours) == 1
    assert sum(per_id[cid] for cid in ours) == len(times)
    assert "already connected, closing old connection" not in log
    with lock:
        assert all(len(v) <= 2 for v in connects.values())
    report = reports[0]
    assert sum(d.connects for d in report.devices) == DEVICES + len(times)
