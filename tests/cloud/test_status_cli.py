"""``iotfl status`` against a real cloud (uvicorn and its database): tables, ``--json``, and a clear error."""

from __future__ import annotations

import json

from cloud_client import Cloud
from typer.testing import CliRunner

from iotfl.broker import free_port
from iotfl.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def _seed(cloud: Cloud) -> None:
    """Round 1 closed with both gateways' aggregates; gw0 reported two devices and some rejected updates."""
    devices = [
        {"dev": "d1", "state": "online", "battery": 0.5, "rssi": -60, "ram_class": "class2", "updated_at": 1.0},
        {"dev": "d2", "state": "offline", "updated_at": 1.0},
    ]
    report = {
        "round": 2,
        "accepted": 4,
        "devices_in_round": 2,
        "live": 3,
        "bytes_up": 99,
        "counters": {"accepted": 4, "signature": 7},
        "devices": devices,
    }
    assert cloud.http.post("/api/v1/gateways/gw0/report", json=report, headers=cloud.auth("gw0")).status_code == 200
    for gw in ("gw0", "gw1"):
        assert cloud.post(cloud.agg(gw, 1, bytes_up=5000)).status_code == 200
    cloud.wait_for(lambda: cloud.status()["round"] == 2)


def test_status_prints_the_rest_status_as_tables(cloud: Cloud) -> None:
    cloud.checkin("gw0", "gw1")
    _seed(cloud)
    result = runner.invoke(app, ["status", "--cloud", cloud.url], env=WIDE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        "round 2/3" in lines[0]
        and "model v1" in lines[0]
        and "device statuses: 1 online, 0 sleeping, 1 offline" in lines[0]
    )
    gw0 = next(line for line in lines if line.lstrip("│ ").startswith("gw0"))
    assert "1 / 2" in gw0 and "5,000" in gw0 and "4 · 2 / 3" in gw0 and "collecting" in gw0
    rejected = next(line for line in lines if "signature" in line)
    assert "7" in rejected and "gw0: 7" in rejected
    accuracy = cloud.status()["history"][0]["accuracy"]
    assert any(line.strip("│ ").startswith("1 ") and f"{accuracy * 100:.1f} %" in line for line in lines)


def test_status_json_is_the_rest_status_plus_the_fleet_overview(cloud: Cloud) -> None:
    _seed(cloud)
    result = runner.invoke(app, ["status", "--cloud", cloud.url, "--json"], env=WIDE)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    status = cloud.status()
    assert {k: out[k] for k in status if k != "gateways"} == {k: v for k, v in status.items() if k != "gateways"}
    assert [g["id"] for g in out["gateways"]] == ["gw0", "gw1"]
    assert out["overview"]["rejected"] == {"signature": 7}
    assert out["device_states"] == {"online": 1, "sleeping": 0, "offline": 1}


def test_status_of_a_cloud_that_is_not_there_or_not_a_cloud_exits_1_without_a_traceback(cloud: Cloud) -> None:
    for url, words in ((f"http://127.0.0.1:{free_port()}", "ConnectError"), (f"{cloud.url}/nowhere", "HTTP 404")):
        result = runner.invoke(app, ["status", "--cloud", url])
        assert result.exit_code == 1 and "cannot read" in result.output and words in result.output
        assert "Traceback" not in result.output
