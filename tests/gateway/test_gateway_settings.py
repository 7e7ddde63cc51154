"""GatewaySettings: defaults, IOTFL_* environment, refused values, broker URLs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from flcore.endpoints import BrokerAddress, parse_broker_url
from gateway.settings import GatewaySettings
from iotfl.config import ConfigError, build


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTFL_TOKEN", "s3cret")
    monkeypatch.setenv("IOTFL_QUORUM", "3")
    monkeypatch.setenv("IOTFL_DEVICES", "50")  # another service's setting is ignored
    s = GatewaySettings(id="gw0")
    assert (s.token, s.quorum, s.fleet, s.round_timeout, s.poll_interval) == ("s3cret", 3, "default", 30.0, 0.5)
    assert (s.state_dir, s.max_update_bytes, s.max_samples) == (Path("."), 1048576, 100000)
    assert s.broker_address == BrokerAddress("127.0.0.1", 1883)
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(
    "kwargs",
    [dict(id="gw0", token=""), dict(id="gw0", token="   "), dict(token="x"), dict(id="bad id", token="x"),
     dict(id="gw0", token="x", broker="tcp://h:1"), dict(id="gw0", token="x", cloud="ftp://x"),
     dict(id="gw0", token="x", quorum=-1), dict(id="gw0", token="x", fleet="a/b")],
)  # fmt: skip
def test_refused_values(kwargs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOTFL_TOKEN", raising=False)
    monkeypatch.delenv("IOTFL_ID", raising=False)
    with pytest.raises(ValidationError):
        GatewaySettings(**kwargs)


def test_build_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOTFL_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="token"):
        build(GatewaySettings, None, "gateway", id="gw0", token="")


def test_broker_urls() -> None:
    assert parse_broker_url("mqtt://10.0.0.5:1884") == BrokerAddress("10.0.0.5", 1884)
    assert parse_broker_url("mqtts://broker.example") == BrokerAddress("broker.example", 8883, tls=True)
    assert parse_broker_url("mqtt://gw%400:p%3Aw@h") == BrokerAddress("h", 1883, False, "gw@0", "p:w")
    for bad in ("http://h:1", "mqtt://:1883", "mqtt://h:99999", "mqtt://h:1/x"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)
