"""One simulated device against a real mosquitto, with the test playing the gateway over MQTT."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sim_probe import Msg, Probe

from device_sim.device import SimDevice
from device_sim.policy import shuffle_seed
from device_sim.trainer import train_local
from flcore.datasets import sensors
from flcore.messages import Ack, Status, Task, Up
from flcore.model import ModelSpec
from flcore.topics import GatewayTopics, status_topic

pytestmark = pytest.mark.timeout(60)

FLEET = "t"
GW = GatewayTopics(FLEET, "gw0")
DATA = sensors(0)
SPEC = ModelSpec(DATA.layers)


def _task(round: int = 1, sub: int = 0, **kw: Any) -> Task:
    args: dict[str, Any] = dict(
        round=round,
        base=round - 1,
        layers=SPEC.layers,
        w=SPEC.init(round),
        lr=0.1,
        epochs=2,
        batch=8,
        chunk=64,
        deadline=time.time() + 60,
        min_battery=0.1,
        sub=sub,
    )
    args.update(kw)
    return Task(**args)


def _is_up(dev: str) -> Callable[[Msg], bool]:
    return lambda m: m.topic == GW.up(dev)


def _is_status(dev: str, **want: Any) -> Callable[[Msg], bool]:
    def match(m: Msg) -> bool:
        if m.topic != status_topic(FLEET, dev) or not m.payload:
            return False
        s = Status.decode(m.payload)
        return all(getattr(s, k) == v for k, v in want.items())

    return match


@pytest.fixture
def device_factory(sim_device: Callable[..., SimDevice]) -> Callable[..., SimDevice]:
    return functools.partial(sim_device, fleet=FLEET, ack_timeout=5.0, rssi=-55)


def test_online_status_then_up_decodes_and_matches_local_training(
    probe_factory: Callable[..., Probe], device_factory: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard, f"iotfl/{FLEET}/dev/+/status"])
    device = device_factory(level=0.8)
    online = Status.decode(probe.expect(_is_status("d0001", state="online")).payload)
    assert (online.gw, online.battery, online.rssi, online.ram_class, online.fw) == (
        "gw0",
        0.8,
        -55,
        "constrained",
        "sim-0.1.0",
    )
    task = _task(round=3)
    probe.publish(GW.task, task.encode(), retain=True)
    msg = probe.expect(_is_up("d0001"))
    up = Up.decode(msg.payload, params=SPEC.param_count, topic_dev="d0001")
    assert (up.dev, up.round, up.base, up.sub, up.n, up.chunk) == ("d0001", 3, 2, 0, 40, 64)
    assert set(up.meta or {}) == {"battery", "train_ms", "ram_class", "fw"}
    assert up.meta["battery"] == pytest.approx(0.8 + 0.025 - 0.05 - 0.002)  # recharge, then training + message
    expected, loss = train_local(SPEC, task.w, device.x, device.y, 0.1, 2, 8, shuffle_seed(0, "d0001", 3, 0))
    true_delta = expected - task.w
    error = np.abs(up.delta() - true_delta)
    half_step = np.repeat(up.scales, up.chunk)[: SPEC.param_count] / 2
    assert np.all(error <= half_step * 1.001 + 1e-7)  # deterministic rounding: at most half a step off
    assert up.loss == pytest.approx(loss)
    probe.publish(GW.ack("d0001"), Ack(3, up.seq, "accepted").encode())
    deadline = time.monotonic() + 5
    while device.report.acks != {"accepted": 1} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert device.report.acks == {"accepted": 1}
    assert (device.report.trainings, device.report.ups, device.report.bytes_up) == (1, 1, len(msg.payload))
    assert device.report.battery_by_round == {3: (round(0.8 + 0.025 - 0.052, 4), 1)}


def test_no_ack_resends_the_same_seq_then_gives_up(
    probe_factory: Callable[..., Probe], device_factory: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard])
    device = device_factory(ack_timeout=0.3, max_resends=2)
    probe.publish(GW.task, _task(round=1).encode(), retain=True)
    first = probe.expect(_is_up("d0001"))
    resends = [probe.expect(_is_up("d0001"), timeout=3) for _ in range(2)]
    assert all(m.payload == first.payload for m in resends)  # same seq, same bytes
    probe.quiet(_is_up("d0001"), 1.0)  # 1 + max_resends sends, then it gives up
    r = device.report
    assert (r.ups, r.resends, r.unacked, r.bytes_up) == (3, 2, 1, 3 * len(first.payload))
    seq1 = Up.decode(first.payload).seq
    probe.publish(GW.task, _task(round=2).encode(), retain=True)
    second = Up.decode(probe.expect(_is_up("d0001")).payload)
    assert second.round == 2 and second.seq > seq1
    probe.publish(GW.ack("d0001"), Ack(2, second.seq, "duplicate").encode())  # a late resend's answer settles it
    probe.quiet(_is_up("d0001"), 0.8)
    assert device.report.acks == {"duplicate": 1}


def test_a_wrong_seq_ack_does_not_stop_the_resends(
    probe_factory: Callable[..., Probe], device_factory: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard])
    device_factory(ack_timeout=0.4, max_resends=1)
    probe.publish(GW.task, _task().encode(), retain=True)
    up = Up.decode(probe.expect(_is_up("d0001")).payload)
    probe.publish(GW.ack("d0001"), Ack(1, up.seq + 7, "accepted").encode())
    probe.publish(GW.ack("d0001"), b"\xc1 not msgpack")  # ignored, never crashes the device
    assert Up.decode(probe.expect(_is_up("d0001"), timeout=3).payload).seq == up.seq


@pytest.mark.parametrize(
    ("kwargs", "task_kw", "reason", "state"),
    [
        (dict(ram_class="class0"), {}, "ram", "online"),
        (dict(level=0.1), dict(min_battery=0.1), "battery", "sleeping"),
        ({}, dict(select=["d0002"]), "select", "online"),
        (dict(duty=0.0), {}, "duty", "sleeping"),
    ],
)
def test_skips_publish_a_retained_status_naming_the_task(
    probe_factory: Callable[..., Probe],
    device_factory: Callable[..., SimDevice],
    kwargs: dict[str, Any],
    task_kw: dict[str, Any],
    reason: str,
    state: str,
) -> None:
    probe = probe_factory([GW.up_wildcard, f"iotfl/{FLEET}/dev/+/status"])
    device = device_factory(**kwargs)
    probe.publish(GW.task, _task(round=4, sub=1, **task_kw).encode(), retain=True)
    msg = probe.expect(_is_status("d0001", skip=reason))
    status = Status.decode(msg.payload)
    assert (status.round, status.sub, status.state, status.gw) == (4, 1, state, "gw0")
    probe.quiet(_is_up("d0001"), 0.5)
    assert device.report.skips == {reason: 1} and device.report.trainings == 0
    late = probe_factory([status_topic(FLEET, "d0001")], client_id="late-subscriber")
    retained = late.expect(lambda m: m.retain)
    assert Status.decode(retained.payload).skip == reason


def test_crash_publishes_the_retained_offline_will(
    probe_factory: Callable[..., Probe], device_factory: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([f"iotfl/{FLEET}/dev/+/status"])
    device = device_factory()
    probe.expect(_is_status("d0001", state="online"))
    device.crash()
    will = Status.decode(probe.expect(_is_status("d0001", state="offline")).payload)
    assert will.gw == "gw0"
    late = probe_factory([status_topic(FLEET, "d0001")], client_id="late-subscriber")
    assert Status.decode(late.expect(lambda m: m.retain).payload).state == "offline"


def test_dropped_connection_sends_the_will_then_reconnects_without_retraining(
    probe_factory: Callable[..., Probe], device_factory: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard, f"iotfl/{FLEET}/dev/+/status"])
    device = device_factory()
    probe.publish(GW.task, _task().encode(), retain=True)
    up = Up.decode(probe.expect(_is_up("d0001")).payload)
    probe.publish(GW.ack("d0001"), Ack(1, up.seq, "accepted").encode())
    device.drop_connection()
    probe.expect(_is_status("d0001", state="offline"))
    probe.expect(_is_status("d0001", state="online"), timeout=15)  # paho's reconnect
    probe.quiet(_is_up("d0001"), 1.0)  # the retained task comes again but was already handled
    assert device.report.trainings == 1


def test_done_task_stops_the_device(
    probe_factory: Callable[..., Probe], device_factory: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard, f"iotfl/{FLEET}/dev/+/status"])
    device = device_factory()
    probe.publish(GW.task, _task(round=2, done=True).encode(), retain=True)
    assert device.done.wait(5)
    probe.publish(GW.task, _task(round=3).encode(), retain=True)
    probe.quiet(_is_up("d0001"), 1.0)
    assert device.report.trainings == 0
    device.stop()
    probe.expect(_is_status("d0001", state="offline"))
