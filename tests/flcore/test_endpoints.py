"""Broker URLs: parsed once for every part, printed without their password."""

from __future__ import annotations

import pytest

from flcore.endpoints import BrokerAddress, parse_broker_url


def test_defaults_and_credentials() -> None:
    assert parse_broker_url("mqtt://127.0.0.1") == BrokerAddress("127.0.0.1", 1883)
    assert parse_broker_url("mqtts://b.example") == BrokerAddress("b.example", 8883, tls=True)
    assert parse_broker_url(" mqtt://gw%400:p%3Aw@h:1884 ") == BrokerAddress("h", 1884, False, "gw@0", "p:w")


def test_printed_form_hides_the_password() -> None:
    address = parse_broker_url("mqtts://gw0:s3cret@broker.site:8883")
    assert str(address) == "mqtts://gw0:***@broker.site:8883"
    assert "s3cret" not in str(address)


@pytest.mark.parametrize("bad", ["http://h:1883", "mqtt://", "mqtt://h:99999", "mqtt://h:1883/topic", "h:1883"])
def test_bad_urls_raise_a_readable_error(bad: str) -> None:
    with pytest.raises(ValueError, match="broker URL"):
        parse_broker_url(bad)
