"""The shared network loop: timers in order and cancellable, and many devices on one thread over a real broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sim_probe import Msg, Probe

from device_sim.battery import Battery
from device_sim.device import SimDevice
from device_sim.netloop import NetLoop
from device_sim.settings import FleetSettings
from flcore.datasets import sensors
from flcore.messages import Status
from iotfl.broker import Broker

pytestmark = pytest.mark.timeout(60)

DATA = sensors(0)
FLEET = "loop"
DEVICES = 60


def test_timers_run_on_the_loop_thread_in_due_order_and_cancelled_ones_never() -> None:
    loop = NetLoop(name="test-net")
    ran: list[tuple[str, str]] = []
    done = threading.Event()

    def record(tag: str) -> None:
        ran.append((tag, threading.current_thread().name))

    try:
        loop.call_later(0.3, record, "c")
        loop.call_later(0.1, record, "a")
        loop.call_later(0.2, record, "b")
        loop.call_later(0.15, record, "never").cancel()
        loop.call_later(0.4, done.set)
        assert done.wait(5)
    finally:
        loop.stop()
    assert ran == [("a", "test-net"), ("b", "test-net"), ("c", "test-net")]


def _status(state: str) -> Callable[[Msg], bool]:
    return lambda m: bool(m.payload) and Status.decode(m.payload).state == state


def _collect(probe: Probe, state: str, n: int) -> set[str]:
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while len(seen) < n and time.monotonic() < deadline:
        seen.add(Status.decode(probe.expect(_status(state), timeout=30).payload).dev)
    return seen


def test_sixty_devices_share_one_network_thread(mosquitto: Broker, probe_factory: Callable[..., Probe]) -> None:
    probe = probe_factory([f"iotfl/{FLEET}/dev/+/status"])
    settings = FleetSettings(broker=mosquitto.url, fleet=FLEET, battery=False)
    before = threading.active_count()
    loop = NetLoop(name="test-net")
    devices: list[SimDevice] = []
    with ThreadPoolExecutor(1) as pool:
        try:
            for i in range(DEVICES):
                device = SimDevice(
                    f"d{i:04d}",
                    "gw0",
                    DATA.x_train[:10],
                    DATA.y_train[:10],
                    ram_class="constrained",
                    battery=Battery(settings.battery_model(), 1.0),
                    settings=settings,
                    pool=pool,
                    net=loop,
                )
                device.start()
                devices.append(device)
            assert _collect(probe, "online", DEVICES) == {d.dev for d in devices}
            assert all(d.connected.is_set() and d.report.connects == 1 for d in devices)
            assert threading.active_count() - before == 1  # the loop's thread, whatever the number of devices
        finally:
            for d in devices:
                d.stop()
            loop.stop()
    assert _collect(probe, "offline", DEVICES) == {d.dev for d in devices}
