"""A running gateway reports its round progress, rejections and its devices' statuses to the real cloud, which
serves them on ``/api/v1/gateways`` and ``/api/v1/devices`` (the dashboard's data)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_gateway_service import Follower, cloud, gateway, wait_for

from flcore.datasets import Dataset, sensors
from flcore.messages import Status
from iotfl.broker import Broker


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sensors(0, samples=200)


def test_gateway_reports_progress_rejections_and_device_statuses(
    mosquitto: Broker, tmp_path: Path, dataset: Dataset
) -> None:
    with cloud(tmp_path, dataset, rounds=1) as http:
        a = Follower(mosquitto.url, "a", 10)
        b = Follower(mosquitto.url, "b", 20, hold=True)  # holds round 1 open until released
        a.status(Status("a", "online", battery=0.42, rssi=-71, ram_class="class2", fw="fw-9", gw="gw0"))
        try:
            with gateway(mosquitto, http, tmp_path / "gw0"):
                wait_for(lambda: (1, 0) in a.sent and a.acks.qsize() == 1)
                a.send(b"\x00not msgpack")  # one rejected update (reason: decode)

                def progress() -> dict | None:
                    gw0 = http.get("/api/v1/gateways").json()["gateways"][0]
                    p = gw0["progress"]
                    return gw0 if p and p["accepted"] == 1 and gw0["rejected"].get("decode") == 1 else None

                gw0 = wait_for(progress, timeout=15)
                assert gw0["progress"]["round"] == 1 and gw0["progress"]["live"] == 2 and not gw0["posted"]
                assert (gw0["devices_online"], gw0["devices_known"]) == (2, 2)
                devices = http.get("/api/v1/devices").json()
                assert devices["total"] == 2
                first = devices["items"][0]
                assert {k: first[k] for k in ("dev", "gw", "state", "battery", "rssi", "ram_class", "fw")} == {
                    "dev": "a", "gw": "gw0", "state": "online", "battery": 0.42, "rssi": -71,
                    "ram_class": "class2", "fw": "fw-9",
                }  # fmt: skip
                b.status(Status("b", "sleeping", gw="gw0"))
                wait_for(lambda: http.get("/api/v1/devices", params={"state": "sleeping"}).json()["total"] == 1, 15)
                b.release.set()
                wait_for(lambda: http.get("/api/v1/gateways").json()["gateways"][0]["posted"], timeout=30)
        finally:
            a.close()
            b.close()
