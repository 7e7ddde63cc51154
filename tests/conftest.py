"""Shared fixtures: a real mosquitto per test on a free port, started and stopped by the test itself."""

from __future__ import annotations

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
