"""The real simulated device on a provisioned broker (the generated iotfl.conf: TLS, password file, ACL) with a login
that is not its own: the broker drops its update, the gateway never acks it, and the device notices (it keeps the
update, re-sends the same seq up to its bound, then records it as unanswered), while the correctly provisioned device
next to it is accepted."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from provisioned_fleet import FLEET, Fleet, provisioned_fleet
from test_security_broker import WAIT

from device_sim.battery import Battery
from device_sim.device import Event, SimDevice
from device_sim.settings import FleetSettings
from flcore.datasets import sensors
from flcore.messages import Task
from flcore.model import ModelSpec
from gateway.node import GatewayNode
from gateway.settings import GatewaySettings

DATA = sensors(0)
SAMPLES = 40
ACK_TIMEOUT = 1.0
MAX_RESENDS = 2


class Recorder:
    """A device's events, each with how many updates its outbox kept at that moment."""

    def __init__(self) -> None:
        self.device: SimDevice | None = None
        self.events: list[Event] = []
        self.changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        assert self.device is not None
        with self.changed:
            self.events.append({**event, "kept": len(self.device.outbox)})
            self.changed.notify_all()

    def wait(self, kind: str, timeout: float) -> Event:
        with self.changed:
            assert self.changed.wait_for(lambda: any(e["event"] == kind for e in self.events), timeout), self.events
            return next(e for e in self.events if e["event"] == kind)

    def of(self, *kinds: str) -> list[tuple[Any, ...]]:
        with self.changed:
            return [(e["event"], e.get("seq"), e["kept"]) for e in self.events if e["event"] in kinds]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """gw0: d0000, d0002; gw1: d0001 (test_security_broker's layout) on mosquitto running the generated config."""
    with provisioned_fleet(tmp_path) as made:
        yield made


@pytest.fixture
def devices() -> Iterator[list[SimDevice]]:
    made: list[SimDevice] = []
    yield made
    for device in made:
        device.stop()


def start_device(
    fleet: Fleet, pool: ThreadPoolExecutor, made: list[SimDevice], dev: str, gw: str, login: str
) -> tuple[SimDevice, Recorder]:
    """A simulated device ``dev`` of gateway ``gw`` logging in as ``login`` (with that login's password and HMAC key:
    its whole config.json)."""
    settings = FleetSettings(
        broker=f"mqtts://127.0.0.1:{fleet.broker.port}",
        fleet=FLEET,
        tls_ca=str(fleet.ca),
        ack_timeout=ACK_TIMEOUT,
        max_resends=MAX_RESENDS,
        battery=False,
    )
    keys = json.loads((fleet.out / "device-keys.json").read_text())
    recorder = Recorder()
    device = SimDevice(
        dev,
        gw,
        DATA.x_train[:SAMPLES],
        DATA.y_train[:SAMPLES],
        ram_class="constrained",
        battery=Battery(settings.battery_model(), 1.0),
        settings=settings,
        pool=pool,
        on_event=recorder,
        key=bytes.fromhex(keys[login]),
        login=(login, fleet.password(login)),
    )
    recorder.device = device
    device.start()
    made.append(device)
    assert device.connected.wait(WAIT), f"{dev} could not log in as {login}"
    return device, recorder


def test_a_device_with_another_devices_login_notices_the_missing_ack(
    fleet: Fleet, devices: list[SimDevice], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="device_sim.device")
    settings = GatewaySettings(
        id="gw0",
        fleet=FLEET,
        broker=f"mqtts://gw0:{fleet.password('gw0')}@127.0.0.1:{fleet.broker.port}",
        token="unused",
        broker_ca=fleet.ca,
        device_keys=fleet.out / "gateways" / "gw0" / "device-keys.json",
    )
    node = GatewayNode.from_settings(settings)
    assert node.start(WAIT), "the gateway could not log in over TLS"
    try:
        with ThreadPoolExecutor(2, thread_name_prefix="noack-train") as pool:
            node.open_sub_round(
                Task(1, 0, DATA.layers, ModelSpec(DATA.layers).init(0), 0.1, 1, 8, 8, time.time() + 30, 0.2)
            )
            honest, honest_events = start_device(fleet, pool, devices, "d0000", "gw0", "d0000")
            # d0002's identity and topics with d0000's login (stolen credentials): gw0's task is readable to it,
            # its up/d0002 publish is dropped by the ACL, and ack/d0002 would not be delivered to it either
            thief, thief_events = start_device(fleet, pool, devices, "d0002", "gw0", "d0000")
            # d0001 (gw1's device) with its own login on gw0: the ACL hides gw0's task from it
            stray, _ = start_device(fleet, pool, devices, "d0001", "gw0", "d0001")
            accepted = honest_events.wait("ack", WAIT * 2)
            gave_up = thief_events.wait("gave_up", WAIT * 2 + ACK_TIMEOUT * (MAX_RESENDS + 1))
        totals = node.close_sub_round(journal=False)
        counters = node.counters
    finally:
        node.stop()

    assert (accepted["status"], accepted["round"]) == ("accepted", 1)
    assert honest.report.acks == {"accepted": 1} and honest.report.resends == 0 and honest.report.unacked == 0

    seq = gave_up["seq"]
    # kept in the outbox through every re-send (same seq), dropped from it only when giving up
    assert thief_events.of("up", "resend", "gave_up") == [
        ("up", seq, 1),
        *[("resend", seq, 1)] * MAX_RESENDS,
        ("gave_up", seq, 0),
    ]
    report = thief.report
    assert (report.ups, report.resends, report.unacked, report.acks) == (1 + MAX_RESENDS, MAX_RESENDS, 1, {})
    assert report.updates == [[1, 0, seq, None]]  # sent, never answered
    assert f"d0002: no ack for seq {seq} after {1 + MAX_RESENDS} sends; giving up" in caplog.messages

    assert (stray.report.trainings, stray.report.ups) == (0, 0)

    # the gateway counted the honest update only: nothing of d0002 (or d0001) reached it
    assert counters == Counter({"accepted": 1}), counters
    assert (totals.k, totals.n) == (1, SAMPLES)
    assert node.totals is not None and node.totals.devices == {"d0000": SAMPLES}
