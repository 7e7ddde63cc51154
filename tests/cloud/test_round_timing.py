"""Round timing with short real timeouts: min_gateways, deadline close, extension, liveness, done, restart."""

from __future__ import annotations

import time

import numpy as np
import pytest
from cloud_client import Cloud

from cloud.errors import CloudError
from flcore.datasets import sensors

T = 0.6  # round_timeout of these tests, in seconds


def test_round_one_clock_waits_for_min_gateways(start_cloud) -> None:
    cloud: Cloud = start_cloud(min_gateways=2, round_timeout=T)
    cloud.checkin("gw0")
    first = cloud.current()["deadline"]
    time.sleep(0.3)
    later = cloud.current()["deadline"]
    assert later >= first + 0.25  # the deadline moves with the clock
    assert cloud.round(1)["deadline"] is None
    # one gateway's aggregate is not enough while min_gateways is 2
    assert cloud.post(cloud.agg("gw0", 1)).json()["accepted"] is True
    time.sleep(T + 0.3)
    assert cloud.round(1)["state"] == "open"

    cloud.checkin("gw0", "gw1")
    started = time.time()
    fixed = cloud.round(1)["deadline"]
    assert fixed is not None and abs(fixed - (started + T)) < 0.3
    assert cloud.current()["deadline"] == fixed
    # now the deadline closes it with the one aggregate
    cloud.wait_for(lambda: cloud.round(1)["state"] == "closed", timeout=T + 3)
    assert cloud.round(1)["k"] == 2


def test_deadline_closes_a_round_with_the_aggregates_it_has(start_cloud) -> None:
    cloud: Cloud = start_cloud(round_timeout=T)
    cloud.checkin("gw0", "gw1")
    agg = cloud.agg("gw0", 1, n=5)
    posted = time.time()
    cloud.post(agg)
    assert cloud.round(1)["state"] == "open"  # gw1 is live and has not reported
    cloud.wait_for(lambda: cloud.round(1)["state"] == "closed", timeout=T + 3)
    r1 = cloud.round(1)
    assert r1["closed_at"] >= r1["deadline"] - 0.01 and r1["closed_at"] - posted < T + 1.0
    assert set(r1["gateways"]) == {"gw0"} and r1["n"] == 5
    w0 = cloud.spec.init(0)
    np.testing.assert_allclose(cloud.model()[1], w0 + agg.sum / 5, rtol=1e-6, atol=1e-7)
    # the next round's clock starts at the close
    r2 = cloud.round(2)
    assert r2["state"] == "open" and abs(r2["deadline"] - (r1["closed_at"] + T)) < 1e-6


def test_a_deadline_without_aggregates_is_extended(start_cloud) -> None:
    cloud: Cloud = start_cloud(round_timeout=T)
    cloud.checkin("gw0")
    first = cloud.round(1)["deadline"]
    cloud.wait_for(lambda: cloud.round(1)["deadline"] > first, timeout=T + 3)
    r1 = cloud.round(1)
    assert r1["state"] == "open" and r1["deadline"] - first >= T * 0.9
    assert cloud.status()["history"] == [] and cloud.current()["round"] == 1
    # an aggregate during the extension still counts (gw0 is the only live gateway: it closes at once)
    assert cloud.post(cloud.agg("gw0", 1)).json()["accepted"] is True
    assert cloud.round(1)["state"] == "closed"


def test_a_silent_gateway_stops_being_waited_for(start_cloud) -> None:
    cloud: Cloud = start_cloud(round_timeout=T)
    cloud.checkin("gw0", "gw1")
    cloud.post(cloud.agg("gw0", 1))
    cloud.post(cloud.agg("gw1", 1))
    assert cloud.round(1)["state"] == "closed"
    time.sleep(2 * T + 0.2)  # gw1 says nothing for longer than 2 × round_timeout
    assert cloud.round(2)["state"] == "open"  # its deadline passed with no aggregate: extended
    assert cloud.post(cloud.agg("gw0", 2)).json()["accepted"] is True
    r2 = cloud.round(2)
    assert r2["state"] == "closed" and r2["closed_at"] < r2["deadline"]  # closed by the POST, not the clock
    assert set(r2["gateways"]) == {"gw0"}


def test_state_is_done_after_the_last_round_and_the_cloud_keeps_serving(start_cloud) -> None:
    cloud: Cloud = start_cloud(rounds=2)
    for r in (1, 2):
        assert cloud.post(cloud.agg("gw0", r)).json()["accepted"] is True
    status = cloud.status()
    assert (status["state"], status["round"], status["model_version"]) == ("done", 2, 2)
    assert [h["round"] for h in status["history"]] == [1, 2]
    current = cloud.current()
    assert (current["state"], current["round"], current["base"]) == ("done", 2, 2)
    assert cloud.http.get("/api/v1/rounds/3").status_code == 404
    assert cloud.post(cloud.agg("gw0", 3)).json() == {"detail": {"reason": "future_round"}}
    assert cloud.post(cloud.agg("gw1", 2)).json() == {"detail": {"reason": "late"}}
    assert cloud.post(cloud.agg("gw0", 2)).json() == {"accepted": False, "duplicate": True}
    assert cloud.model()[0] == 2 and cloud.get("/healthz") == {"status": "ok"}


def test_a_restarted_cloud_resumes_from_the_database(start_cloud) -> None:
    first: Cloud = start_cloud(rounds=3)
    a1 = first.agg("gw0", 1)
    first.post(a1)
    first.checkin("gw1")
    first.post(first.agg("gw0", 2))  # round 2 stays open: gw1 is live
    version, weights = first.model()
    before = first.status()
    first.stop()

    second: Cloud = start_cloud(rounds=3)
    assert second.model()[0] == version == 1
    np.testing.assert_array_equal(second.model()[1], weights)
    after = second.status()
    assert after["history"] == before["history"] and after["devices_seen"] == before["devices_seen"]
    assert {g["id"]: g["rounds_reported"] for g in after["gateways"]} == {"gw0": 2, "gw1": 0}
    assert (second.current()["round"], second.current()["base"]) == (2, 1)
    assert second.post(a1).json()["duplicate"] is True
    assert set(second.round(2)["gateways"]) == {"gw0"}
    assert second.post(second.agg("gw1", 2)).json()["accepted"] is True
    assert second.round(2)["state"] == "closed" and second.model()[0] == 2
    second.stop()

    third: Cloud = start_cloud(rounds=3)
    for gw in ("gw0", "gw1"):
        assert third.post(third.agg(gw, 3)).json()["accepted"] is True
    assert third.status()["state"] == "done"
    third.stop()
    # a restart with more rounds after the end opens the next one
    fourth: Cloud = start_cloud(rounds=4)
    current = fourth.current()
    assert (current["state"], current["round"], current["base"]) == ("open", 4, 3)
    assert fourth.status()["state"] == "running" and len(fourth.status()["history"]) == 3


def test_a_database_of_another_model_is_refused(start_cloud) -> None:
    start_cloud().stop()
    other = sensors(0, samples=400, features=6)
    with pytest.raises(CloudError, match="layers"):
        start_cloud(data=other)
