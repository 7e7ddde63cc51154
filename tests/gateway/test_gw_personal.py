"""Personalization at the gateway: the task's ``personal`` from the cloud, the sums of the accepted updates' local
accuracies (``pers``), rebuilt from the journal after a restart, and posted in the ``agg``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gateway_peers import CHUNK, WAIT, Device, P, make_up, running_gateway, wait_for

from cloud.server import running
from cloud.settings import CloudSettings
from flcore.datasets import Dataset, sensors
from flcore.messages import Status, Task, Up
from flcore.personal import Pers
from flcore.quantize import quantize
from flcore.topics import GatewayTopics
from gateway.cloud_client import CloudError, RoundInfo
from gateway.collector import Collector
from gateway.journal import Journal
from gateway.settings import GatewaySettings
from gateway.verdicts import SubRound
from iotfl.broker import Broker

pytestmark = pytest.mark.timeout(120)

TOPICS = GatewayTopics("default", "gw0")
TOKEN = "gw0-secret"


def _meta(pacc: float, gacc: float) -> dict[str, Any]:
    return {"battery": 0.9, "train_ms": 5, "ram_class": "constrained", "fw": "t", "pacc": pacc, "gacc": gacc}


def _collector() -> Collector:
    c = Collector(TOPICS, max_samples=1000)
    c.open(SubRound(round=3, sub=0, base=2, params=P))
    return c


def test_accepted_updates_sum_their_accuracies_and_replay_rebuilds_them(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "gw0")
    journal.begin(3, 2)
    c = _collector()
    ups = [
        make_up("a", round=3, base=2, meta=_meta(0.9, 0.6)),
        make_up("b", round=3, base=2, meta=_meta(0.8, 0.7)),
        make_up("c", round=3, base=2),  # an old device: no accuracies, counted in k only
        make_up("a", round=3, base=2, meta=_meta(0.1, 0.1)),  # a duplicate does not count again
    ]
    statuses = []
    for u in ups:
        payload = u.encode()
        verdict = c.ingest(TOPICS.up(u.dev), payload, lambda up, p=payload: journal.update(up, TOPICS.up(up.dev), p))
        assert verdict is not None
        statuses.append(verdict.ack.status)
    assert statuses == ["accepted", "accepted", "accepted", "duplicate"]
    assert c.totals is not None and c.totals.k == 3
    assert c.totals.pers == Pers(pytest.approx(1.7), pytest.approx(1.3), 2)
    journal.close()
    replay = Journal(tmp_path, "gw0").begin(3, 2)  # the gateway restarted: the round comes back from its journal
    assert replay is not None
    again = _collector()
    for topic, payload in replay.ups[0]:
        again.ingest(topic, payload, journaled=True)
    assert again.totals is not None and again.totals.pers == c.totals.pers and again.totals.k == 3


def _current(**extra: Any) -> dict[str, Any]:
    base = dict(round=1, base=0, state="open", deadline=1.0, layers=[4, 3, 2], lr=0.1, epochs=1, batch=8, chunk=8,
                min_battery=0.1, gateway_rounds=1)  # fmt: skip
    return {**base, **extra}


def test_round_info_reads_personal_and_defaults_to_zero() -> None:
    assert RoundInfo.from_json(_current()).personal == 0
    assert RoundInfo.from_json(_current(personal=4)).personal == 4
    for bad in (-1, 1.5, "2", 1001):
        with pytest.raises(CloudError):
            RoundInfo.from_json(_current(personal=bad))


@contextmanager
def _cloud(tmp_path: Path, dataset: Dataset) -> Iterator[httpx.Client]:
    settings = CloudSettings(
        db=f"sqlite:///{tmp_path / 'cloud.db'}",
        port=0,
        gateway_tokens={"gw0": TOKEN},
        dataset=dataset.name,
        rounds=1,
        round_timeout=30.0,
        chunk=CHUNK,
        personal_epochs=3,
    )
    with running(settings, dataset) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield http


def _gateway(broker: Broker, http: httpx.Client, state_dir: Path) -> AbstractContextManager[None]:
    settings = GatewaySettings(id="gw0", broker=broker.url, cloud=str(http.base_url), token=TOKEN,
                               state_dir=state_dir, round_timeout=20, poll_interval=0.1)  # fmt: skip
    return running_gateway(settings)


def _answer(device: Device, n: int, pacc: float, gacc: float) -> Task:
    """Wait for the round's task, answer it with an update carrying local accuracies, wait for the ack."""
    task = device.tasks.get(timeout=WAIT)
    scales, q = quantize(np.full(task.w.size, 0.01, dtype=np.float32), CHUNK)
    device.send(Up(device.dev, task.round, task.base, n, 0.3, 1, CHUNK, scales, q, meta=_meta(pacc, gacc)))
    assert device.ack().status == "accepted"
    return task


def test_local_accuracies_reach_the_cloud_across_a_gateway_restart(mosquitto: Broker, tmp_path: Path) -> None:
    dataset = sensors(0, samples=200)
    with _cloud(tmp_path, dataset) as http:
        assert http.get("/api/v1/rounds/current").json()["personal"] == 3
        a, b = Device(mosquitto.url, "a"), Device(mosquitto.url, "b")
        try:
            for d in (a, b):
                d.status(Status(d.dev, "online", gw="gw0"))
            with _gateway(mosquitto, http, tmp_path / "gw0"):
                task = _answer(a, 10, 0.9, 0.5)
            assert task.personal == 3
            while not b.tasks.empty():  # the first gateway's task: b answers the restarted one's
                b.tasks.get()
            with _gateway(mosquitto, http, tmp_path / "gw0"):
                _answer(b, 20, 0.7, 0.6)
                info = wait_for(lambda: _closed(http, 1), what="round 1 closed")
        finally:
            a.close()
            b.close()
        history = http.get("/api/v1/status").json()["history"]
    assert (info["k"], info["p_devices"]) == (2, 2)
    assert info["p_accuracy"] == pytest.approx(0.8) and info["l_accuracy"] == pytest.approx(0.55)
    assert (history[0]["p_accuracy"], history[0]["l_accuracy"], history[0]["p_devices"]) == (
        info["p_accuracy"],
        info["l_accuracy"],
        2,
    )


def _closed(http: httpx.Client, r: int) -> dict[str, Any] | None:
    body = http.get(f"/api/v1/rounds/{r}").json()
    return body if body.get("state") == "closed" else None


def test_no_accuracies_means_no_pers(tmp_path: Path) -> None:
    c = _collector()
    up = make_up("a", round=3, base=2)
    c.ingest(TOPICS.up("a"), up.encode())
    assert c.totals is not None and c.totals.pers == Pers() and c.totals.k == 1
