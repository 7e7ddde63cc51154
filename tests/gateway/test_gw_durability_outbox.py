"""Store-and-forward: the outbox's durable queue, and the forwarder against the real cloud (accepted, duplicate,
409 late, an unreachable cloud retried with jittered backoff until it comes up, credentials that are wrong)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from cloud.server import running
from cloud.settings import CloudSettings
from flcore.datasets import Dataset, sensors
from flcore.messages import Agg
from flcore.model import ModelSpec
from gateway.cloud_client import CloudClient
from gateway.forwarder import Forwarder, backoff_pause
from gateway.outbox import Outbox
from iotfl.broker import free_port

TOKEN = "gw0-outbox-token"


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sensors(0, samples=200)


def agg(round: int, params: int = 23, k: int = 2, n: int = 30, base: int | None = None) -> Agg:
    total = np.arange(params, dtype=np.float32) * 0.001
    return Agg("gw0", round, round - 1 if base is None else base, n, k, total, 0.5, 100, ("a", "b")[:k])


@contextmanager
def cloud(tmp_path: Path, dataset: Dataset, port: int = 0, **overrides: object) -> Iterator[str]:
    values = dict(db=f"sqlite:///{tmp_path / 'cloud.db'}", port=port, gateway_tokens={"gw0": TOKEN},
                  dataset=dataset.name, rounds=3, round_timeout=30.0, min_gateways=1)  # fmt: skip
    values.update(overrides)
    with running(CloudSettings(**values), dataset) as url:  # type: ignore[arg-type]
        yield url


def test_outbox_keeps_posts_in_round_order_until_finished(tmp_path: Path) -> None:
    box = Outbox(tmp_path, "gw0")
    assert box.put(agg(2), "m2") and box.put(agg(1), "m1")
    assert not box.put(agg(1), "m1")  # the same (round, base, model) again: already queued
    first = box.next()
    assert first is not None and (first.round, first.k, first.n, first.attempts) == (1, 2, 30, 0)
    assert Agg.decode(first.body, params=23).round == 1
    assert box.attempted(1, "HTTP 503") == 1 and box.attempted(1, "HTTP 503") == 2
    box.close()
    reopened = Outbox(tmp_path, "gw0")  # committed state survives the process
    assert reopened.depth() == 2 and reopened.next().attempts == 2  # type: ignore[union-attr]
    reopened.finish(1, "accepted")
    assert reopened.depth() == 1 and reopened.next().round == 2  # type: ignore[union-attr]
    assert reopened.state_of(1, 0, "m1") == "accepted" and reopened.state_of(2, 1, "m2") == "pending"
    assert reopened.state_of(1, 0, "another model") is None
    assert reopened.put(agg(2), "fresh cloud")  # same round, other weights: replaces the stale post
    assert reopened.state_of(2, 1, "fresh cloud") == "pending" and reopened.depth() == 1
    assert reopened.oldest_age() is not None and reopened.oldest_age() >= 0  # type: ignore[operator]
    reopened.close()


def test_forwarder_delivers_once_and_drops_a_late_post(
    tmp_path: Path, dataset: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    params = ModelSpec(dataset.layers).param_count
    box = Outbox(tmp_path / "gw", "gw0")
    with cloud(tmp_path, dataset) as url:
        client = CloudClient(url, TOKEN)
        fwd = Forwarder(box, client, threading.Event())
        box.put(agg(1, params, base=0))
        outcome = fwd.attempt()
        assert outcome is not None and outcome.result == "accepted" and box.depth() == 0
        box.put(agg(1, params, base=0), "again")  # e.g. a restart that lost the finished row: the cloud dedups
        assert fwd.attempt().result == "duplicate"  # type: ignore[union-attr]
        box.put(agg(3, params, base=2))  # round 3 is not open: a final refusal, logged and removed
        outcome = fwd.attempt()
        assert outcome is not None and (outcome.result, outcome.final) == ("future_round", True)
        assert box.depth() == 0 and fwd.attempt() is None
        assert (fwd.delivered, fwd.refused) == (2, 1)
        share = client.http.get("/api/v1/rounds/1").json()["gateways"]["gw0"]
        assert (share["k"], share["n"]) == (2, 30)  # counted once despite two deliveries
        client.close()
    assert "round 3: the cloud refused the aggregate (future_round" in caplog.text
    box.close()


def test_forwarder_retries_with_jittered_backoff_until_the_cloud_comes_up(tmp_path: Path, dataset: Dataset) -> None:
    params = ModelSpec(dataset.layers).param_count
    port = free_port()
    box = Outbox(tmp_path / "gw", "gw0")
    box.put(agg(1, params, base=0))
    stop = threading.Event()
    client = CloudClient(f"http://127.0.0.1:{port}", TOKEN, timeout=1)
    fwd = Forwarder(box, client, stop, backoff_first=0.1, backoff_max=0.4, rng=random.Random(7))
    fwd.start()
    try:
        time.sleep(1.5)  # nothing listens: attempts pile up, the post stays queued
        attempts = box.next().attempts  # type: ignore[union-attr]
        assert 4 <= attempts <= 60 and box.depth() == 1
        with cloud(tmp_path, dataset, port=port) as url:
            fwd.wake()
            end = time.monotonic() + 5
            while box.depth() and time.monotonic() < end:
                time.sleep(0.05)
            assert box.depth() == 0 and fwd.delivered == 1
            check = CloudClient(url, TOKEN)
            share = check.http.get("/api/v1/rounds/1").json()["gateways"]["gw0"]
            check.close()
            assert (share["k"], share["n"]) == (2, 30)
    finally:
        stop.set()
        fwd.join(3)
        client.close()
        box.close()


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(3)
    for failures, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (60, 10.0)):
        pauses = [backoff_pause(failures, 0.5, 10.0, rng) for _ in range(200)]
        assert all(0 <= p <= ceiling for p in pauses)
        assert max(pauses) > 0.8 * ceiling and min(pauses) < 0.2 * ceiling  # spread over the whole range
