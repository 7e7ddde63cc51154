"""Fixtures of the simulator tests: a probe client on the test broker (the test plays the gateway), a pool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sim_probe import Probe

from iotfl.broker import Broker


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
