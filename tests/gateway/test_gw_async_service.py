"""Stragglers against the real cloud, gateway and mosquitto: sync acks a late round's update `late` and leaves it
out; async (FedBuff-style) accepts it during the next round and counts it with its staleness weight."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as paho
import pytest
from gateway_peers import WAIT, Device, running_gateway
from test_gateway_service import CHUNK, TOKEN, cloud, model, round_closed, wait_for

from flcore.datasets import Dataset, sensors
from flcore.messages import Status, Task, Up
from flcore.quantize import quantize
from gateway.settings import GatewaySettings
from iotfl.broker import Broker

PROMPT = {"a": 12, "b": 30, "c": 7, "d": 21}  # 4 of 5 devices answer in time: 20 % stragglers
STRAGGLER = ("s", 40)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sensors(0, samples=200)


class Member(Device):
    """Trains on each task (a deterministic update); ``hold`` gates its answers to rounds ≥ 2."""

    def __init__(self, broker_url: str, dev: str, n: int) -> None:
        self.n = n
        self.tasks_seen: dict[int, Task] = {}
        self.sent: dict[int, Up] = {}
        self.got_task = threading.Condition()
        self.hold = threading.Event()
        super().__init__(broker_url, dev)
        self.status(Status(dev, "online", gw="gw0"))

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.task:
            task = Task.decode(msg.payload)
            with self.got_task:
                self.tasks_seen.setdefault(task.round, task)
                self.got_task.notify_all()
        else:
            super()._on_message(client, userdata, msg)

    def task(self, round: int) -> Task:
        with self.got_task:
            if not self.got_task.wait_for(lambda: round in self.tasks_seen, WAIT * 2):
                raise TimeoutError(f"{self.dev} got no task for round {round}")
            return self.tasks_seen[round]

    def update(self, task: Task) -> Up:
        rng = np.random.default_rng([sum(self.dev.encode()), task.round])
        scales, q = quantize(rng.normal(0, 0.05, task.w.size), CHUNK)
        up = Up(self.dev, task.round, task.base, self.n, 0.3, task.round, CHUNK, scales, q, task.sub)
        self.sent[task.round] = up
        return up


@contextmanager
def gateway(broker: Broker, http: httpx.Client, state_dir: Path) -> Iterator[None]:
    # round_timeout 3 s: round 1 waits for the straggler only that long.
    settings = GatewaySettings(id="gw0", broker=broker.url, cloud=str(http.base_url), token=TOKEN,
                               state_dir=state_dir, round_timeout=3, poll_interval=0.1)  # fmt: skip
    with running_gateway(settings):
        yield


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_straggler_update_arriving_in_the_next_round(
    mosquitto: Broker, tmp_path: Path, dataset: Dataset, mode: str
) -> None:
    started = time.monotonic()
    with cloud(tmp_path, dataset, rounds=2, mode=mode) as http:
        assert http.get("/api/v1/rounds/current").json()["mode"] == mode
        _, w0 = model(http)
        fleet = [Member(mosquitto.url, dev, n) for dev, n in PROMPT.items()]
        straggler = Member(mosquitto.url, *STRAGGLER)
        try:
            with gateway(mosquitto, http, tmp_path / "gw0"):
                for dev in fleet:
                    dev.send(dev.update(dev.task(1)))
                    assert dev.ack().status == "accepted"
                late_up = straggler.update(straggler.task(1))  # trained on round 1, but too slow for it
                first = wait_for(lambda: round_closed(http, 1), timeout=20)
                straggler.task(2)  # round 2 is open at the gateway: now round 1's update arrives
                straggler.send(late_up)
                ack = straggler.ack()
                straggler.status(Status("s", "online", gw="gw0", round=2, sub=0, skip="select"))
                for dev in fleet:
                    dev.send(dev.update(dev.task(2)))
                    assert dev.ack().status == "accepted"
                second = wait_for(lambda: round_closed(http, 2), timeout=20)
                _, w2 = model(http)
        finally:
            for dev in [*fleet, straggler]:
                dev.close()
    n_prompt = sum(PROMPT.values())
    assert (first["k"], first["n"]) == (4, n_prompt)  # the straggler missed round 1 in both modes
    ups1 = [dev.sent[1] for dev in fleet]
    ups2 = [dev.sent[2] for dev in fleet]
    w1 = w0.astype(np.float64) + sum(u.n * u.delta().astype(np.float64) for u in ups1) / n_prompt
    fresh2 = sum(u.n * u.delta().astype(np.float64) for u in ups2)
    if mode == "sync":
        assert (ack.status, ack.reason, ack.round) == ("late", "late", 1)
        assert (second["k"], second["n"]) == (4, n_prompt)
        expected = w1 + fresh2 / n_prompt
    else:
        assert (ack.status, ack.reason, ack.round) == ("accepted", "", 1)
        n_all = n_prompt + STRAGGLER[1]
        assert (second["k"], second["n"]) == (5, n_all)
        weight = 1 / math.sqrt(2)  # one round behind
        expected = w1 + (fresh2 + weight * STRAGGLER[1] * late_up.delta().astype(np.float64)) / n_all
        undiscounted = w1 + (fresh2 + STRAGGLER[1] * late_up.delta().astype(np.float64)) / n_all
        assert np.abs(w2 - undiscounted).max() > 1e-3  # the discount is visible in the model
    np.testing.assert_allclose(w2, expected, atol=1e-5)
    assert time.monotonic() - started < 40
