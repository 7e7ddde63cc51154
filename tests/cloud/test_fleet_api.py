"""The fleet reports gateways post (``POST /api/v1/gateways/{gw}/report``) and what the dashboard reads back:
``GET /api/v1/gateways`` and the paged ``GET /api/v1/devices``, on a real uvicorn and database."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from cloud_client import Cloud


def _device(i: int, gw: str = "gw0", state: str = "online", at: float = 1000.0) -> dict[str, Any]:
    return {
        "dev": f"d{i:04d}",
        "state": state,
        "battery": i / 2000,
        "rssi": -40 - i % 50,
        "ram_class": "64k",
        "fw": "1.0",
        "updated_at": at,
    }


def _report(devices: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "round": 1,
        "accepted": 3,
        "devices_in_round": 3,
        "live": 5,
        "bytes_up": 1234,
        "counters": {},
        "devices": devices,
        **kw,
    }


def test_reports_upsert_device_statuses_and_page_them_in_id_order(cloud: Cloud) -> None:
    first = cloud.http.post(
        "/api/v1/gateways/gw0/report", json=_report([_device(i) for i in range(1200)]), headers=cloud.auth("gw0")
    )
    assert first.status_code == 200 and first.json() == {"devices": 1200}
    # a later report changes three statuses and moves one device to gw1
    changed = [_device(5, state="offline", at=2000.0), _device(7, state="sleeping", at=2000.0)]
    assert cloud.http.post("/api/v1/gateways/gw0/report", json=_report(changed), headers=cloud.auth("gw0")).json() == {
        "devices": 2
    }
    cloud.http.post("/api/v1/gateways/gw1/report", json=_report([_device(9, at=3000.0)]), headers=cloud.auth("gw1"))

    page = cloud.get("/api/v1/devices", params=dict(offset=0, limit=500))
    assert page["total"] == 1200 and page["offset"] == 0 and page["limit"] == 500
    assert [d["dev"] for d in page["items"]] == [f"d{i:04d}" for i in range(500)]
    by_id = {d["dev"]: d for d in page["items"]}
    assert by_id["d0005"]["state"] == "offline" and by_id["d0005"]["updated_at"] == 2000.0
    assert by_id["d0007"]["state"] == "sleeping"
    assert by_id["d0009"]["gw"] == "gw1" and by_id["d0009"]["updated_at"] == 3000.0
    assert by_id["d0100"] == {**_device(100), "gw": "gw0"}
    last = cloud.get("/api/v1/devices", params=dict(offset=1000, limit=500))
    assert [d["dev"] for d in last["items"]] == [f"d{i:04d}" for i in range(1000, 1200)]
    assert cloud.get("/api/v1/devices", params=dict(gw="gw1"))["total"] == 1
    assert cloud.get("/api/v1/devices", params=dict(state="offline"))["items"][0]["dev"] == "d0005"
    assert cloud.get("/api/v1/devices", params=dict(gw="gw0", state="online"))["total"] == 1197


def test_overview_counts_devices_progress_and_rejections_per_gateway(cloud: Cloud) -> None:
    devices = [_device(0), _device(1), _device(2, state="offline")]
    counters = {"accepted": 9, "duplicate": 2, "stale": 1, "signature": 3, "late": 1, "n_range": 0}
    cloud.http.post("/api/v1/gateways/gw0/report", json=_report(devices, counters=counters), headers=cloud.auth("gw0"))
    cloud.http.post(
        "/api/v1/gateways/gw1/report", json=_report([], counters={"signature": 2}), headers=cloud.auth("gw1")
    )
    cloud.post(cloud.agg("gw0", 1, bytes_up=777))

    overview = cloud.get("/api/v1/gateways")
    assert overview["round"] == 1 and overview["rejected"] == {"late": 1, "signature": 5}
    gw0, gw1 = overview["gateways"]
    assert gw0["id"] == "gw0" and gw0["posted"] is True and gw1["posted"] is False
    assert (gw0["devices_online"], gw0["devices_known"], gw0["bytes_up"]) == (2, 3, 777)
    assert gw0["rejected"] == {"late": 1, "signature": 3}
    assert gw0["progress"]["round"] == 1 and gw0["progress"]["accepted"] == 3 and gw0["progress"]["live"] == 5
    assert gw0["progress"]["bytes_up"] == 1234 and gw0["rounds_reported"] == 1
    assert gw1["progress"] is not None and gw1["bytes_up"] == 0 and gw1["devices_known"] == 0


def test_a_report_needs_its_own_gateways_token_and_a_valid_body_and_changes_nothing_otherwise(cloud: Cloud) -> None:
    body = _report([_device(1)])
    assert cloud.http.post("/api/v1/gateways/gw0/report", json=body).status_code == 401
    refused = cloud.http.post("/api/v1/gateways/gw0/report", json=body, headers=cloud.auth("gw1"))
    assert refused.status_code == 403 and refused.json()["detail"]["reason"] == "forbidden"
    for bad in (
        {**body, "round": -1},
        _report([{**_device(1), "battery": 1.5}]),
        _report([{**_device(1), "dev": "a/b"}]),
        _report([{**_device(1), "state": "asleep"}]),
        {**body, "counters": {"x": -1}},
    ):
        assert cloud.http.post("/api/v1/gateways/gw0/report", json=bad, headers=cloud.auth("gw0")).status_code == 422
    assert cloud.get("/api/v1/devices")["total"] == 0
    assert all(g["progress"] is None for g in cloud.get("/api/v1/gateways")["gateways"])
    assert cloud.http.get("/api/v1/devices", params={"limit": 501}).status_code == 422


def test_concurrent_reports_naming_the_same_new_devices_all_succeed(cloud: Cloud) -> None:
    """Two gateways (one a device moved to) racing to insert the same rows: every post answers 200."""
    devices = [_device(i) for i in range(40)]

    def post(i: int) -> int:
        gw = ("gw0", "gw1")[i % 2]
        with httpx.Client(base_url=cloud.url, timeout=10.0) as http:
            return http.post(f"/api/v1/gateways/{gw}/report", json=_report(devices), headers=cloud.auth(gw)).status_code

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(post, range(20))) == [200] * 20
    page = cloud.get("/api/v1/devices", params=dict(limit=100))
    assert page["total"] == 40 and {d["gw"] for d in page["items"]} <= {"gw0", "gw1"}
