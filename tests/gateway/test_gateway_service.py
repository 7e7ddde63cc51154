"""The whole gateway service against the real cloud (uvicorn in a thread, SQLite) and real devices over mosquitto."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as paho
import pytest
from gateway_peers import WAIT, Device, wait_for

from cloud.server import running
from cloud.settings import CloudSettings
from flcore.datasets import Dataset, sensors
from flcore.messages import Status, Task, Up
from flcore.quantize import quantize
from gateway.service import run
from gateway.settings import GatewaySettings
from iotfl.broker import Broker

TOKEN = "gw0-secret"
CHUNK = 64


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sensors(0, samples=200)


class Follower(Device):
    """A device that answers every new (round, sub) task with a deterministic update (or only when released)."""

    def __init__(self, broker_url: str, dev: str, n: int, hold: bool = False) -> None:
        self.n = n
        self.sent: dict[tuple[int, int], Up] = {}
        self.done = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._pending: Task | None = None
        super().__init__(broker_url, dev)
        self.status(Status(dev, "online", gw="gw0"))
        threading.Thread(target=self._answer, daemon=True).start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.task:
            task = Task.decode(msg.payload)
            if task.done:
                self.done.set()
            elif (task.round, task.sub) not in self.sent:
                self._pending = task
        else:
            super()._on_message(client, userdata, msg)

    def _answer(self) -> None:
        end = time.monotonic() + 120
        while time.monotonic() < end and not self.done.is_set():
            task = self._pending
            if task is None or not self.release.wait(0.05) or (task.round, task.sub) in self.sent:
                time.sleep(0.02)
                continue
            rng = np.random.default_rng([sum(self.dev.encode()), task.round, task.sub])
            scales, q = quantize(rng.normal(0, 0.05, task.w.size), CHUNK)
            up = Up(self.dev, task.round, task.base, self.n, 0.3, len(self.sent), CHUNK, scales, q, task.sub)
            self.sent[(task.round, task.sub)] = up
            self.client.publish(f"{self.topics.prefix}/up/{self.dev}", up.encode(), qos=1)


@contextmanager
def cloud(tmp_path: Path, dataset: Dataset, **overrides: object) -> Iterator[httpx.Client]:
    values = dict(db=f"sqlite:///{tmp_path / 'cloud.db'}", port=0, gateway_tokens={"gw0": TOKEN},
                  dataset=dataset.name, rounds=2, round_timeout=30.0, chunk=CHUNK, min_gateways=1)  # fmt: skip
    values.update(overrides)
    with running(CloudSettings(**values), dataset) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http


@contextmanager
def gateway(broker: Broker, http: httpx.Client, state_dir: Path) -> Iterator[threading.Thread]:
    settings = GatewaySettings(id="gw0", broker=broker.url, cloud=str(http.base_url), token=TOKEN,
                               state_dir=state_dir, round_timeout=20, poll_interval=0.1)  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(settings, stop), name="gateway", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        start = time.monotonic()
        thread.join(WAIT)
        assert not thread.is_alive() and time.monotonic() - start < 3, "gateway did not stop promptly"


def round_closed(http: httpx.Client, r: int) -> dict | None:
    response = http.get(f"/api/v1/rounds/{r}")
    return response.json() if response.status_code == 200 and response.json()["state"] == "closed" else None


def model(http: httpx.Client) -> tuple[int, np.ndarray]:
    data = http.get("/api/v1/model/latest", params={"format": "json"}).json()
    return data["version"], np.array(data["w"], dtype=np.float32)


@pytest.mark.parametrize("gateway_rounds", [1, 2])
def test_rounds_close_with_the_right_k_n_and_model(
    mosquitto: Broker, tmp_path: Path, dataset: Dataset, gateway_rounds: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    sizes = {"a": 12, "b": 30, "c": 7}
    with cloud(tmp_path, dataset, gateway_rounds=gateway_rounds) as http:
        _, w0 = model(http)
        fleet = [Follower(mosquitto.url, dev, n) for dev, n in sizes.items()]
        try:
            with gateway(mosquitto, http, tmp_path / "gw0"):
                first = wait_for(lambda: round_closed(http, 1))
                second = wait_for(lambda: round_closed(http, 2))
                assert all(dev.done.wait(WAIT) for dev in fleet)  # the retained done task reached every device
                assert http.get("/api/v1/rounds/current").json()["state"] == "done"
        finally:
            for dev in fleet:
                dev.close()
    n = sum(sizes.values())
    for info in (first, second):
        assert (info["k"], info["n"]) == (3 * gateway_rounds, n)
        assert (info["gateways"]["gw0"]["k"], info["gateways"]["gw0"]["n"]) == (3 * gateway_rounds, n)
    # Round 1's model: each sub-round moves the gateway by its sample-weighted mean delta; the cloud applies it.
    expected = w0.astype(np.float64)
    for sub in range(gateway_rounds):
        ups = [dev.sent[(1, sub)] for dev in fleet]
        expected += sum(u.n * u.delta().astype(np.float64) for u in ups) / n
    with cloud(tmp_path, dataset, gateway_rounds=gateway_rounds) as http:  # the same database, reopened
        version, w2 = model(http)
    assert version == 2
    for sub in range(gateway_rounds):
        ups = [dev.sent[(2, sub)] for dev in fleet]
        expected += sum(u.n * u.delta().astype(np.float64) for u in ups) / n
    np.testing.assert_allclose(w2, expected, atol=1e-5)
    assert "round 1 posted (accepted)" in caplog.text and "training done after round 2" in caplog.text


def test_restarted_gateway_resumes_the_round_from_its_journal(
    mosquitto: Broker, tmp_path: Path, dataset: Dataset
) -> None:
    with cloud(tmp_path, dataset, rounds=1) as http:
        a = Follower(mosquitto.url, "a", 10)
        b = Follower(mosquitto.url, "b", 20, hold=True)
        try:
            with gateway(mosquitto, http, tmp_path / "gw0"):
                wait_for(lambda: (1, 0) in a.sent and a.acks.qsize() == 1)
            assert a.ack().status == "accepted"
            assert (tmp_path / "gw0" / "gw0-state.sqlite3").exists()
            with gateway(mosquitto, http, tmp_path / "gw0"):
                b.release.set()  # a does not resend: its update comes back from the journal
                info = wait_for(lambda: round_closed(http, 1))
            assert (info["k"], info["n"]) == (2, 30)
        finally:
            a.close()
            b.close()


def test_gateway_closes_its_round_a_margin_before_the_clouds_deadline(
    mosquitto: Broker, tmp_path: Path, dataset: Dataset
) -> None:
    # The cloud's round (8 s) is shorter than the gateway's own timeout (20 s): the gateway must close 2 s (its
    # forward margin) before the cloud does, so its aggregate is not refused as late with acked updates in it.
    with cloud(tmp_path, dataset, rounds=1, round_timeout=8.0) as http:
        a = Follower(mosquitto.url, "a", 10)
        b = Follower(mosquitto.url, "b", 20, hold=True)  # never answers: only the deadline closes the round
        try:
            with gateway(mosquitto, http, tmp_path / "gw0"):
                wait_for(lambda: (1, 0) in a.sent)
                cloud_deadline = http.get("/api/v1/rounds/current").json()["deadline"]
                task = a._pending
                assert task is not None and task.round == 1
                assert task.deadline == pytest.approx(cloud_deadline - 2.0, abs=0.05)
                info = wait_for(lambda: round_closed(http, 1), timeout=20)
            assert info["gateways"]["gw0"]["k"] == 1 and info["n"] == 10  # a's acked update counted
            assert a.ack().status == "accepted"
        finally:
            a.close()
            b.close()


class Skipper(Device):
    """A device that declines every task with a ``select`` skip, keeping the tasks it got."""

    def __init__(self, broker_url: str, dev: str) -> None:
        self.seen: list[Task] = []
        super().__init__(broker_url, dev)
        self.status(Status(dev, "online", gw="gw0"))

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.topic != self.topics.task:
            return super()._on_message(client, userdata, msg)
        task = Task.decode(msg.payload)
        self.seen.append(task)
        if not task.done:
            self.status(Status(self.dev, "online", gw="gw0", round=task.round, sub=task.sub, skip="select"))


def test_the_clouds_select_reaches_the_task_and_an_all_skipped_round_closes_at_once(
    mosquitto: Broker, tmp_path: Path, dataset: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    with cloud(tmp_path, dataset, select=0.5, rounds=1) as http:
        fleet = [Skipper(mosquitto.url, dev) for dev in ("a", "b")]
        try:
            with gateway(mosquitto, http, tmp_path / "gw0"):
                started = time.monotonic()
                wait_for(lambda: "round 1 sub 0 closed (all_answered): k=0" in caplog.text, timeout=15)
                assert time.monotonic() - started < 15  # not the gateway's 20 s deadline
        finally:
            for dev in fleet:
                dev.close()
    assert all(dev.seen and dev.seen[0].select == 0.5 for dev in fleet)
    assert "round 1 closed with no accepted update; nothing to post" in caplog.text
