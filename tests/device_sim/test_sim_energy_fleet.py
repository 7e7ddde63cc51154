"""Energy accounting in both simulator modes over a real mosquitto (the test plays the gateway): the battery drains
by the joules of the bytes actually received and sent and of the multiply-accumulates, and a device whose store runs
out sends nothing more, reports itself offline and stays dead."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import pytest
from sim_probe import Msg, Probe

from device_sim.device import SimDevice
from device_sim.fleet import FleetReport, run_fleet
from device_sim.population import build_population
from device_sim.settings import FleetSettings
from flcore.datasets import sensors
from flcore.energy import EnergyModel, training_round
from flcore.messages import Ack, Status, Task, Up
from flcore.model import ModelSpec
from flcore.topics import GatewayTopics, device_of_status, status_topic
from iotfl.broker import Broker

pytestmark = pytest.mark.timeout(90)

FLEET = "e"
GW = GatewayTopics(FLEET, "gw0")
DATA = sensors(0)
SPEC = ModelSpec(DATA.layers)


def _task(round: int, done: bool = False) -> Task:
    return Task(round, round - 1, SPEC.layers, SPEC.init(round), 0.1, 2, 8, 64, time.time() + 60, 0.0, done=done)


def _is_dead_status(dev: str) -> Callable[[Msg], bool]:
    def match(m: Msg) -> bool:
        return m.topic == status_topic(FLEET, dev) and bool(m.payload) and Status.decode(m.payload).skip == "dead"

    return match


def test_device_drains_by_joules_then_dies(
    probe_factory: Callable[..., Probe], sim_device: Callable[..., SimDevice]
) -> None:
    probe = probe_factory([GW.up_wildcard, f"iotfl/{FLEET}/dev/+/status"])
    energy = EnergyModel(capacity_j=1.0)  # one training (~0.65 J of 40 samples) takes two thirds of the store
    device = sim_device(fleet=FLEET, energy_policy="naive", battery_j=1.0, recharge=0.0, ack_timeout=5.0)
    first = _task(1).encode()
    probe.publish(GW.task, first, retain=True)
    msg = probe.expect(lambda m: m.topic == GW.up("d0001"))
    up = Up.decode(msg.payload, params=SPEC.param_count, topic_dev="d0001")
    probe.publish(GW.ack("d0001"), Ack(1, up.seq, "accepted").encode())
    cost = training_round(energy, SPEC, 40, 2, len(first), len(msg.payload))
    assert 0.5 < cost.total < 0.9
    assert up.meta is not None and up.meta["battery"] == pytest.approx(1.0 - cost.total, abs=1e-4)
    probe.publish(GW.task, _task(2).encode(), retain=True)  # naive: 35 % >= 10 % so it trains, and runs out
    probe.quiet(lambda m: m.topic == GW.up("d0001"), 1.5)
    probe.publish(GW.task, _task(3).encode(), retain=True)
    dead = Status.decode(probe.expect(_is_dead_status("d0001")).payload)
    assert (dead.state, dead.round, dead.battery) == ("offline", 3, 0.0)
    r = device.report
    assert (r.trainings, r.died, r.skips) == (1, 2, {"dead": 1})
    assert r.energy_by_round[1] == pytest.approx([cost.tx, cost.rx, cost.compute, cost.idle])
    assert sum(r.energy_by_round[2]) == pytest.approx(1.0 - cost.total)  # only what was left
    assert r.energy_by_round[3] == [0.0, 0.0, 0.0, 0.0]  # dead: nothing more


def test_batched_fleet_drains_by_joules_then_dies(mosquitto: Broker, probe_factory: Callable[..., Probe]) -> None:
    probe = probe_factory([GW.up_wildcard, f"iotfl/{FLEET}/dev/+/status"])
    make = functools.partial(
        FleetSettings,
        broker=mosquitto.url,
        fleet=FLEET,
        devices=3,
        gateways=1,
        sim="batched",
        alpha=1000.0,  # nearly equal shards: every device's round costs about the same
        ram_mix={"constrained": 1},
        battery_start=(1.0, 1.0),
        energy_policy="naive",
        recharge=0.0,
        ack_timeout=5.0,
        run_timeout=60,
    )
    profiles = {p.dev: p for p in build_population(make(), DATA.y_train)}
    first = _task(1).encode()
    # Round 1 leaves about a third: enough for naive to try round 2, not to finish it.
    worst = max(
        training_round(EnergyModel(), SPEC, len(p.indices), 2, len(first), 500).total for p in profiles.values()
    )
    settings = make(battery_j=1.5 * worst)
    energy = EnergyModel(capacity_j=settings.battery_j)
    stop = threading.Event()
    result: list[FleetReport] = []
    runner = threading.Thread(target=lambda: result.append(run_fleet(settings, DATA, stop)))
    runner.start()
    try:
        online: set[str] = set()
        while online != set(profiles):  # the shared connection announces every device before it reads tasks
            online.add(Status.decode(probe.expect(lambda m: device_of_status(FLEET, m.topic) is not None).payload).dev)
        probe.publish(GW.task, first, retain=True)
        ups: dict[str, bytes] = {}
        while set(ups) != set(profiles):
            msg = probe.expect(lambda m: GW.device_of(m.topic) is not None, timeout=20)
            dev = GW.device_of(msg.topic)
            assert dev is not None
            ups[dev] = msg.payload
            probe.publish(GW.ack(dev), Ack(1, Up.decode(msg.payload).seq, "accepted").encode())
        probe.publish(GW.task, _task(2).encode(), retain=True)
        probe.quiet(lambda m: GW.device_of(m.topic) is not None, 1.5)
        probe.publish(GW.task, _task(3).encode(), retain=True)
        dead: set[str] = set()
        while dead != set(profiles):
            dead.add(Status.decode(probe.expect(lambda m: any(_is_dead_status(d)(m) for d in profiles)).payload).dev)
        probe.publish(GW.task, _task(4, done=True).encode(), retain=True)
        runner.join(30)
        assert not runner.is_alive()
    finally:
        stop.set()
        runner.join(10)
    (report,) = result
    for d in report.devices:
        cost = training_round(energy, SPEC, d.samples, 2, len(first), len(ups[d.dev]))
        assert d.battery_by_round[1] == (round(1.0 - cost.total / settings.battery_j, 4), 1)
        assert d.energy_by_round[1] == pytest.approx([cost.tx, cost.rx, cost.compute, cost.idle])
        assert (d.trainings, d.died, d.skips, d.battery) == (1, 2, {"dead": 1}, 0.0)
    out = report.to_dict()["energy"]
    assert [out["by_round"][r]["alive"] for r in ("1", "2", "3")] == [3, 0, 0]
    assert out["died"] == {dev: 2 for dev in profiles}
