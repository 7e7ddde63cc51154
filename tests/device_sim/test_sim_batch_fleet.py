"""A batched fleet over a real mosquitto, the test playing two gateways: each device's update on its own topic,
equal to what per-device training sends, acks per device, a re-send with the same bytes, skips, done, the report."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from sim_probe import Probe

from device_sim.fleet import FleetReport, run_fleet
from device_sim.policy import shuffle_seed
from device_sim.population import build_population
from device_sim.settings import FleetSettings
from device_sim.trainer import train_local
from flcore.datasets import sensors
from flcore.messages import Ack, Status, Task, Up
from flcore.model import ModelSpec
from flcore.topics import GatewayTopics, device_of_status
from iotfl.broker import Broker

pytestmark = pytest.mark.timeout(90)

FLEET = "f"
DATA = sensors(0)
SPEC = ModelSpec(DATA.layers)


def test_batched_fleet_round_trip(mosquitto: Broker, probe_factory: Callable[..., Probe]) -> None:
    gws = {g: GatewayTopics(FLEET, g) for g in ("gw0", "gw1")}
    probe = probe_factory([g.up_wildcard for g in gws.values()] + [f"iotfl/{FLEET}/dev/+/status"])
    settings = FleetSettings(
        broker=mosquitto.url,
        fleet=FLEET,
        devices=10,
        gateways=2,
        sim="batched",
        seed=2,
        battery=False,
        ram_mix={"class0": 1, "constrained": 4},
        ack_timeout=1.0,
        run_timeout=60,
    )
    profiles = {p.dev: p for p in build_population(settings, DATA.y_train)}
    trainers = {d for d, p in profiles.items() if p.ram_class != "class0"}
    stop = threading.Event()
    result: list[FleetReport] = []
    runner = threading.Thread(target=lambda: result.append(run_fleet(settings, DATA, stop)))
    runner.start()
    try:
        online: set[str] = set()
        while online != set(profiles):  # the shared connections announce every device
            msg = probe.expect(lambda m: device_of_status(FLEET, m.topic) is not None, timeout=20)
            status = Status.decode(msg.payload)
            assert status.gw == profiles[status.dev].gw and status.ram_class and status.state == "online"
            online.add(status.dev)
        w = SPEC.init(0)
        for g in gws.values():
            task = Task(1, 0, SPEC.layers, w, 0.1, 2, 8, 64, time.time() + 60, 0.1)
            probe.publish(g.task, task.encode(), retain=True)
        ups: dict[str, list[bytes]] = {}
        skipped: set[str] = set()
        unacked = sorted(trainers)[0]  # its first send gets no ack: it must come again, same bytes
        deadline = time.monotonic() + 30
        while set(ups) != trainers or len(ups[unacked]) < 2 or skipped != set(profiles) - trainers:
            msg = probe.expect(lambda m: True, timeout=max(0.1, deadline - time.monotonic()))
            dev = device_of_status(FLEET, msg.topic)
            if dev is not None:
                status = Status.decode(msg.payload)
                if status.skip is not None:
                    assert status.skip == "ram" and status.round == 1
                    skipped.add(dev)
                continue
            gw = gws[next(g for g, t in gws.items() if t.device_of(msg.topic))]
            dev = gw.device_of(msg.topic)
            assert dev is not None and profiles[dev].gw == gw.gw
            ups.setdefault(dev, []).append(msg.payload)
            up = Up.decode(msg.payload, params=SPEC.param_count, topic_dev=dev)
            if dev != unacked or len(ups[dev]) > 1:
                probe.publish(gw.ack(dev), Ack(1, up.seq, "accepted").encode())
        assert ups[unacked][0] == ups[unacked][1]
        for dev in trainers:
            p = profiles[dev]
            up = Up.decode(ups[dev][0], params=SPEC.param_count, topic_dev=dev)
            x, y = DATA.x_train[p.indices], DATA.y_train[p.indices]
            ref, loss = train_local(SPEC, w, x, y, 0.1, 2, 8, shuffle_seed(settings.seed, dev, 1, 0))
            assert (up.round, up.base, up.n, up.seq) == (1, 0, len(p.indices), 1)
            assert up.loss == pytest.approx(loss, abs=1e-5)
            step = np.repeat(up.scales, 64)[: SPEC.param_count]
            assert np.all(np.abs(up.delta() - (ref - w)) <= step * 0.5 + 1e-6)  # same delta, within a quantum
        for g in gws.values():
            done = Task(2, 1, SPEC.layers, w, 0.1, 2, 8, 64, time.time() + 60, 0.1, done=True)
            probe.publish(g.task, done.encode(), retain=True)
        runner.join(30)
        assert not runner.is_alive()
    finally:
        stop.set()
        runner.join(10)
    (report,) = result
    assert not report.stopped
    by_dev = {d.dev: d for d in report.devices}
    for dev in trainers:
        d = by_dev[dev]
        assert (d.trainings, d.acks, d.unacked) == (1, {"accepted": 1}, 0)
        assert d.updates == [[1, 0, 1, "accepted"]]
        assert d.resends == (1 if dev == unacked else 0)
    assert all(by_dev[d].skips == {"ram": 1} for d in set(profiles) - trainers)
    offline = probe.expect(lambda m: device_of_status(FLEET, m.topic) is not None and b"offline" in m.payload)
    assert Status.decode(offline.payload).state == "offline"


def test_batched_refuses_what_it_does_not_simulate() -> None:
    with pytest.raises(ValueError, match="does not simulate attack, dp_clip"):
        FleetSettings(sim="batched", attack="sign-flip:10%", dp_clip=1.0)
