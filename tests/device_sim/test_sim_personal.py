"""Personal heads on simulated devices: head-only fine-tuning, few-shot adaptation, and the local accuracies a
device reports in both simulator modes (per-device and batched) over a real mosquitto."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from sim_probe import Probe

from device_sim.device import SimDevice
from device_sim.fleet import FleetReport, run_fleet
from device_sim.personal import Personal, few_shot, fit_head, personal_seed
from device_sim.policy import shuffle_seed
from device_sim.population import build_population
from device_sim.settings import FleetSettings
from device_sim.trainer import train_local
from flcore.datasets import sensors
from flcore.messages import Ack, Task, Up
from flcore.model import ModelSpec
from flcore.personal import head_slice
from flcore.topics import GatewayTopics
from iotfl.broker import Broker

pytestmark = pytest.mark.timeout(90)

DATA = sensors(0)
SPEC = ModelSpec(DATA.layers)


def _task(personal: int, round: int = 1) -> Task:
    w = SPEC.init(3)
    return Task(round, round - 1, SPEC.layers, w, 0.1, 2, 8, 64, time.time() + 60, 0.1, personal=personal)


def test_fit_head_changes_only_the_head_and_learns() -> None:
    w, cut = SPEC.init(0), head_slice(SPEC)
    x, y = DATA.x_train[:200], DATA.y_train[:200]
    head = fit_head(SPEC, w, w[cut], x, y, 10, 0.1, 8, 0)
    assert head.dtype == np.float32 and head.shape == (cut.stop - cut.start,)
    assert np.array_equal(fit_head(SPEC, w, w[cut], x, y, 0, 0.1, 8, 0), w[cut])  # zero epochs: unchanged
    tuned = w.copy()
    tuned[cut] = head
    assert SPEC.evaluate(tuned, x, y)[0] > SPEC.evaluate(w, x, y)[0] + 0.2
    assert np.array_equal(fit_head(SPEC, w, w[cut], x, y, 10, 0.1, 8, 0), head)  # reproducible from the seed


def test_few_shot_adapts_the_head_to_a_skewed_label_mix() -> None:
    w = train_local(SPEC, SPEC.init(0), DATA.x_train, DATA.y_train, 0.05, 1, 32, 0)[0]
    mine = np.isin(DATA.y_test, [0, 1])  # a new device that only ever sees two of the classes
    x, y = DATA.x_test[mine], DATA.y_test[mine]
    adapted = few_shot(SPEC, w, x[:10], y[:10])
    cut = head_slice(SPEC)
    assert np.array_equal(adapted[: cut.start], w[: cut.start])  # the body stays the global one
    assert SPEC.evaluate(adapted, x[10:], y[10:])[0] > SPEC.evaluate(w, x[10:], y[10:])[0]


def test_personal_state_is_deterministic_and_one_sample_reports_nothing() -> None:
    a, b = Personal.of(0, "d0001", 40), Personal.of(0, "d0001", 40)
    assert np.array_equal(a.test, b.test) and len(a.test) == 8 and len(a.train) == 32
    assert not np.array_equal(a.test, Personal.of(0, "d0002", 40).test)
    lone = Personal.of(0, "d0003", 1)
    assert lone.step(_task(3), DATA.x_train[:1], DATA.y_train[:1], 0) is None and lone.head is None


def _expected(dev: str, x: np.ndarray, y: np.ndarray, task: Task, seed: int) -> tuple[Personal, tuple[float, float]]:
    state = Personal.of(seed, dev, len(y))
    accuracy = state.step(task, x, y, personal_seed(seed, dev, task))
    assert accuracy is not None
    return state, accuracy


def test_a_device_trains_on_its_split_and_reports_its_accuracies(
    probe_factory: Callable[..., Probe], sim_device: Callable[..., SimDevice]
) -> None:
    gw = GatewayTopics("p", "gw0")
    probe = probe_factory([gw.up_wildcard])
    device = sim_device(fleet="p", ack_timeout=5.0)
    task = _task(personal=3)
    probe.publish(gw.task, task.encode(), retain=True)
    up = Up.decode(probe.expect(lambda m: m.topic == gw.up("d0001")).payload, params=SPEC.param_count)
    state, (pacc, gacc) = _expected("d0001", device.x, device.y, task, 0)
    assert up.n == len(state.train) == 32
    assert (up.meta or {})["pacc"] == round(pacc, 4) and (up.meta or {})["gacc"] == round(gacc, 4)
    xs, ys = device.x[state.train], device.y[state.train]
    ref, _ = train_local(SPEC, task.w, xs, ys, 0.1, 2, 8, shuffle_seed(0, "d0001", 1, 0))  # held-out never trained
    assert np.all(np.abs(up.delta() - (ref - task.w)) <= np.repeat(up.scales, 64)[: SPEC.param_count] / 2 + 1e-6)
    probe.publish(gw.ack("d0001"), Ack(1, up.seq, "accepted").encode())
    plain = _task(personal=0, round=2)
    probe.publish(gw.task, plain.encode(), retain=True)
    second = Up.decode(probe.expect(lambda m: m.topic == gw.up("d0001")).payload)
    assert second.n == 40 and set(second.meta or {}) == {"battery", "train_ms", "ram_class", "fw"}


def test_a_batched_fleet_reports_the_same_accuracies(mosquitto: Broker, probe_factory: Callable[..., Probe]) -> None:
    gw = GatewayTopics("pb", "gw0")
    probe = probe_factory([gw.up_wildcard])
    settings = FleetSettings(broker=mosquitto.url, fleet="pb", devices=4, gateways=1, sim="batched", seed=5,
                             battery=False, ram_mix={"constrained": 1}, ack_timeout=5.0, run_timeout=60)  # fmt: skip
    profiles = {p.dev: p for p in build_population(settings, DATA.y_train)}
    stop = threading.Event()
    result: list[FleetReport] = []
    runner = threading.Thread(target=lambda: result.append(run_fleet(settings, DATA, stop)))
    runner.start()
    try:
        task = _task(personal=2)
        probe.publish(gw.task, task.encode(), retain=True)
        ups: dict[str, Up] = {}
        while set(ups) != set(profiles):
            msg = probe.expect(lambda m: gw.device_of(m.topic) is not None, timeout=30)
            up = Up.decode(msg.payload, params=SPEC.param_count)
            ups[up.dev] = up
            probe.publish(gw.ack(up.dev), Ack(1, up.seq, "accepted").encode())
        for dev, p in profiles.items():
            x, y = DATA.x_train[p.indices], DATA.y_train[p.indices]
            state, (pacc, gacc) = _expected(dev, x, y, task, settings.seed)
            meta = ups[dev].meta or {}
            assert ups[dev].n == len(state.train) and (meta["pacc"], meta["gacc"]) == (round(pacc, 4), round(gacc, 4))
        probe.publish(gw.task, Task(2, 1, SPEC.layers, task.w, 0.1, 2, 8, 64, 0.0, 0.1, done=True).encode(), True)
        runner.join(30)
        assert not runner.is_alive()
    finally:
        stop.set()
        runner.join(10)
    assert not result[0].stopped
