"""``DeviceLog``: the statuses a gateway reports to the cloud, and only the changed ones after a report."""

from __future__ import annotations

from flcore.messages import Status
from gateway.device_log import DeviceLog


def test_keeps_this_gateways_devices_and_reports_changes_since_a_sequence_number() -> None:
    log = DeviceLog("gw0")
    log.on_status("a", Status("a", "online", battery=0.8, rssi=-60, ram_class="class2", fw="1", gw="gw0"), 10.0)
    log.on_status("b", Status("b", "sleeping", gw="gw0"), 11.0)
    log.on_status("x", Status("x", "online", gw="gw1"), 12.0)  # another gateway's device
    log.on_status("y", Status("y", "offline"), 12.0)  # a Last Will of a device never seen here
    assert log.changed_since(0) == [
        {
            "dev": "a",
            "state": "online",
            "battery": 0.8,
            "rssi": -60,
            "ram_class": "class2",
            "fw": "1",
            "updated_at": 10.0,
        },
        {
            "dev": "b",
            "state": "sleeping",
            "battery": None,
            "rssi": None,
            "ram_class": None,
            "fw": None,
            "updated_at": 11.0,
        },
    ]
    sent = log.seq
    log.on_status("a", Status("a", "offline"), 20.0)  # its Last Will names no gateway: still ours
    log.on_status("b", None, 21.0)  # retained status cleared: reported offline
    assert [(d["dev"], d["state"], d["updated_at"]) for d in log.changed_since(sent)] == [
        ("a", "offline", 20.0),
        ("b", "offline", 21.0),
    ]
    log.on_status("a", Status("a", "online", gw="gw1"), 30.0)  # moved to gw1, which reports it from now on
    assert [d["dev"] for d in log.changed_since(0)] == ["b"] and log.changed_since(log.seq) == []
