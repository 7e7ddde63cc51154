"""A device keeps its update until acked, across tasks and broker restarts; slow and vanishing devices; backoff.

The test plays the gateway over a real mosquitto (``sim_probe.Probe``).
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sim_probe import Msg, Probe

from device_sim.connection import Backoff
from device_sim.device import SLOW_MARGIN, SimDevice
from flcore.datasets import sensors
from flcore.messages import Ack, Status, Task, Up
from flcore.model import ModelSpec
from flcore.topics import GatewayTopics, status_topic
from iotfl.broker import Broker, start_broker

pytestmark = pytest.mark.timeout(60)

FLEET = "c"
GW = GatewayTopics(FLEET, "gw0")
DATA = sensors(0)
SPEC = ModelSpec(DATA.layers)


def _task(round: int, deadline: float | None = None) -> Task:
    deadline = time.time() + 60 if deadline is None else deadline
    return Task(round, round - 1, SPEC.layers, SPEC.init(round), 0.1, 1, 8, 64, deadline, 0.1)


def _is_up(dev: str) -> Callable[[Msg], bool]:
    return lambda m: m.topic == GW.up(dev)


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def make_device(sim_device: Callable[..., SimDevice]) -> Callable[..., SimDevice]:
    return functools.partial(sim_device, fleet=FLEET, battery=False)


def test_a_new_task_does_not_drop_the_unacked_update(
    probe_factory: Callable[..., Probe], make_device: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard])
    device = make_device(ack_timeout=0.6, max_resends=5)
    probe.publish(GW.task, _task(1).encode(), retain=True)
    first = Up.decode(probe.expect(_is_up("d0001")).payload)
    probe.publish(GW.task, _task(2).encode(), retain=True)
    second = Up.decode(probe.expect(lambda m: _is_up("d0001")(m) and Up.decode(m.payload).round == 2).payload)
    assert (first.round, second.round) == (1, 2) and second.seq == first.seq + 1
    # Both stay in the outbox and are re-sent, each with its own seq, until the gateway answers.
    seen: set[int] = set()
    while seen != {first.seq, second.seq}:
        seen.add(Up.decode(probe.expect(_is_up("d0001"), timeout=3).payload).seq)
    probe.publish(GW.ack("d0001"), Ack(1, first.seq, "late", "late").encode())
    probe.publish(GW.ack("d0001"), Ack(2, second.seq, "accepted").encode())
    _wait(lambda: len(device.outbox) == 0)
    probe.quiet(_is_up("d0001"), 1.0)
    report = device.report
    assert report.acks == {"late": 1, "accepted": 1} and report.unacked == 0 and report.resends >= 2
    assert report.updates == [[1, 0, first.seq, "late"], [2, 0, second.seq, "accepted"]]


def test_no_resends_while_offline_and_the_same_seq_after_a_broker_restart(
    mosquitto: Broker, tmp_path: Path, probe_factory: Callable[..., Probe], make_device: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard])
    device = make_device(ack_timeout=0.5, max_resends=1, reconnect_min=0.2, reconnect_max=0.5)
    probe.publish(GW.task, _task(1).encode(), retain=True)
    sent = probe.expect(_is_up("d0001"))
    # The broker PUBACKed the update, so paho will not send it again: only the device's outbox can.
    mosquitto.kill()
    time.sleep(2.0)  # four ack windows with no broker
    assert device.report.resends == 0 and device.report.unacked == 0 and len(device.outbox) == 1
    restarted = start_broker(port=mosquitto.port, prefer="mosquitto", workdir=tmp_path / "again")
    try:
        watcher = Probe(restarted.port, [GW.up_wildcard], client_id="watcher")
        try:
            again = watcher.expect(_is_up("d0001"), timeout=10)
            assert again.payload == sent.payload  # same bytes, same seq
            watcher.publish(GW.ack("d0001"), Ack(1, Up.decode(again.payload).seq, "duplicate", "duplicate").encode())
            _wait(lambda: device.report.acks == {"duplicate": 1})
            assert device.report.connects == 2 and device.report.unacked == 0
        finally:
            watcher.close()
    finally:
        restarted.stop()


def test_a_slow_device_publishes_after_the_deadline(
    probe_factory: Callable[..., Probe], make_device: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard])
    device = make_device()
    device.slow = True
    deadline = time.time() + 1.0
    probe.publish(GW.task, _task(1, deadline=deadline).encode(), retain=True)
    probe.expect(_is_up("d0001"), timeout=10)
    arrived = time.time()
    assert arrived >= deadline + SLOW_MARGIN - 0.05
    assert device.report.updates[0][:2] == [1, 0]


def test_a_vanished_device_goes_silent_and_its_will_comes_after_the_keepalive(
    probe_factory: Callable[..., Probe], make_device: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard, status_topic(FLEET, "d0001")])
    device = make_device(keepalive=5)
    probe.expect(lambda m: m.topic == status_topic(FLEET, "d0001") and Status.decode(m.payload).state == "online")
    device.vanish()
    vanished = time.monotonic()
    probe.publish(GW.task, _task(1).encode(), retain=True)
    # No DISCONNECT and no FIN: the broker keeps the dead connection until 1.5 × keepalive, then sends the will.
    probe.quiet(lambda m: True, 3.0)
    will = probe.expect(lambda m: m.topic == status_topic(FLEET, "d0001"), timeout=10)
    assert Status.decode(will.payload).state == "offline"
    assert 5.0 <= time.monotonic() - vanished <= 12.0
    assert device.vanished and device.report.vanished and device.report.trainings == 0


def test_two_clients_sharing_an_id_slow_down_instead_of_looping(
    probe_factory: Callable[..., Probe], make_device: Callable[..., SimDevice]
) -> None:
    # A misconfiguration (two processes simulating the same device) makes the broker hand the session back and
    # forth. Without the "stable connection" rule each CONNACK would reset the backoff: ~8 takeovers a second.
    a = make_device("d0007")
    b = make_device("d0007")
    time.sleep(4.0)
    total = a.report.connects + b.report.connects
    print(f"\nconnects of two clients sharing one id in 4 s: {a.report.connects} + {b.report.connects}")
    assert total <= 14, total


def test_backoff_windows_double_up_to_the_cap_and_draws_are_spread() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    windows = []
    for _ in range(6):
        windows.append(backoff.window())
        assert 0.0 <= backoff.next() <= windows[-1]
    assert windows == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.window() == 0.5 and backoff.attempts == 0
    draws = [Backoff(1.0, 1.0, random.Random(seed)).next() for seed in range(300)]
    assert min(draws) < 0.05 and max(draws) > 0.95  # full jitter: the whole window is used
    assert len({round(d, 3) for d in draws}) > 250
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
