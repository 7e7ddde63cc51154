"""Shared fixtures: a real mosquitto per test on a free port, started and stopped by the test itself."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotfl.broker import Broker, mosquitto_path, start_broker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto on 127.0.0.1:<free port>; tests may ``kill()`` it and start another on ``.port``."""
    if mosquitto_path() is None:
        pytest.fail("mosquitto is not installed: run `apt-get install -y mosquitto` (the README's test command does)")
    broker = start_broker(prefer="mosquitto", workdir=tmp_path / "broker")
    yield broker
    broker.stop()


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_fleet() -> Iterator[str]:
    """A fleet name of its own for the Redis at 127.0.0.1:6379 (the scale-out keys are prefixed with it), its keys
    removed afterwards; skips with the reason when Redis or the `scaleout` extra is missing."""
    redis = pytest.importorskip("redis", reason="the `scaleout` extra (redis) is not installed")
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}): start redis-server to run the scale-out tests")
    fleet = f"t{secrets.token_hex(4)}"
    yield fleet
    for key in client.scan_iter(f"iotfl:{fleet}:*"):
        client.delete(key)
    client.close()
