"""Fixtures of the simulator tests: a probe client on the test broker (the test plays the gateway), a pool, and
simulated devices connected to that broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sim_probe import Probe

from device_sim.battery import Battery
from device_sim.device import SimDevice
from device_sim.settings import FleetSettings
from flcore.datasets import sensors
from iotfl.broker import Broker

DATA = sensors(0)


@pytest.fixture
def probe_factory(mosquitto: Broker) -> Iterator[Callable[..., Probe]]:
    probes: list[Probe] = []

    def make(topics: list[str], client_id: str = "test-gateway") -> Probe:
        p = Probe(mosquitto.port, topics, client_id)
        probes.append(p)
        return p

    yield make
    for p in probes:
        p.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2, thread_name_prefix="test-train") as ex:
        yield ex


@pytest.fixture
def sim_device(mosquitto: Broker, pool: ThreadPoolExecutor) -> Iterator[Callable[..., SimDevice]]:
    """Makes started, connected devices on gateway gw0 with 40 sensor samples; stops them all afterwards."""
    made: list[SimDevice] = []

    def make(
        dev: str = "d0001", *, ram_class: str = "constrained", level: float = 1.0, rssi: int = -60, **settings: Any
    ) -> SimDevice:
        s = FleetSettings(**{"broker": mosquitto.url, **settings})
        device = SimDevice(
            dev,
            "gw0",
            DATA.x_train[:40],
            DATA.y_train[:40],
            ram_class=ram_class,
            battery=Battery(s.battery_model(), level),
            settings=s,
            pool=pool,
            rssi=rssi,
        )
        device.start()
        made.append(device)
        assert device.connected.wait(10), "device did not connect"
        return device

    yield make
    for d in made:
        d.stop()
