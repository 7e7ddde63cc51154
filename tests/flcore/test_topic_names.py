"""Topic builders and the parsing of received topics (never string-prefix tricks on device ids)."""

from __future__ import annotations

import pytest

from flcore.topics import (
    GatewayTopics,
    check_id,
    device_of_status,
    is_valid_id,
    status_topic,
    status_wildcard,
)

BAD_IDS = ["", "a+b", "+", "#", "a#", "a/b", "/", "a b", "é", "x" * 65, "d.1"]


def test_builders() -> None:
    t = GatewayTopics("default", "gw0")
    assert t.prefix == "iotfl/default/gw/gw0"
    assert t.task == "iotfl/default/gw/gw0/task"
    assert t.up_wildcard == "iotfl/default/gw/gw0/up/+"
    assert t.up("d0001") == "iotfl/default/gw/gw0/up/d0001"
    assert t.ack("d0001") == "iotfl/default/gw/gw0/ack/d0001"
    assert status_topic("plant-7", "d_9") == "iotfl/plant-7/dev/d_9/status"
    assert status_wildcard("plant-7") == "iotfl/plant-7/dev/+/status"


@pytest.mark.parametrize("value", ["a", "A-z_0", "x" * 64, "0", "-", "_"])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value) and check_id(value) == value


@pytest.mark.parametrize("value", [*BAD_IDS, None, 5, b"d1"])
def test_invalid_ids(value: object) -> None:
    assert not is_valid_id(value)


@pytest.mark.parametrize("value", BAD_IDS)
def test_builders_refuse_invalid_ids(value: str) -> None:
    t = GatewayTopics("default", "gw0")
    with pytest.raises(ValueError, match="must match"):
        t.up(value)
    with pytest.raises(ValueError, match="must match"):
        t.ack(value)
    with pytest.raises(ValueError, match="must match"):
        GatewayTopics(value, "gw0")
    with pytest.raises(ValueError, match="must match"):
        GatewayTopics("default", value)
    with pytest.raises(ValueError, match="must match"):
        status_topic("default", value)
    with pytest.raises(ValueError, match="must match"):
        status_wildcard(value)


def test_device_of_valid() -> None:
    t = GatewayTopics("default", "gw0")
    assert t.device_of("iotfl/default/gw/gw0/up/d0001") == "d0001"
    assert t.device_of(t.up("x" * 64)) == "x" * 64


@pytest.mark.parametrize(
    "topic",
    [
        *[f"iotfl/default/gw/gw0/up/{bad}" for bad in BAD_IDS],
        "iotfl/default/gw/gw0/up/",
        "iotfl/default/gw/gw0/up",
        "iotfl/default/gw/gw01/up/d1",  # another gateway whose id starts with this one's
        "iotfl/default/gw/gw/up/d1",
        "iotfl/other/gw/gw0/up/d1",
        "iotfl/default/gw/gw0/ack/d1",
        "iotfl/default/gw/gw0/task",
        "xiotfl/default/gw/gw0/up/d1",
        "iotfl/default/gw/gw0/up/d1/extra",
    ],
)
def test_device_of_invalid(topic: str) -> None:
    assert GatewayTopics("default", "gw0").device_of(topic) is None


def test_device_of_status() -> None:
    assert device_of_status("default", "iotfl/default/dev/d0001/status") == "d0001"
    assert device_of_status("default", status_topic("default", "y" * 64)) == "y" * 64


@pytest.mark.parametrize(
    "topic",
    [
        *[f"iotfl/default/dev/{bad}/status" for bad in BAD_IDS],
        "iotfl/other/dev/d1/status",
        "iotfl/default/dev/d1/state",
        "iotfl/default/gw/d1/status",
        "iotfl/default/dev/d1/status/x",
        "iotfl/default/dev/status",
        "/iotfl/default/dev/d1/status",
    ],
)
def test_device_of_status_invalid(topic: str) -> None:
    assert device_of_status("default", topic) is None
