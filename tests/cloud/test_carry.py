"""A gateway cut off past the deadline: its late aggregate holds updates it acknowledged, so the cloud counts it in
the open round (staleness-weighted, once) instead of refusing it; an old database gains the columns for that."""

from __future__ import annotations

import math

import numpy as np
from cloud_client import Cloud


def test_a_late_aggregate_is_carried_into_the_open_round_once(start_cloud) -> None:
    cloud: Cloud = start_cloud(rounds=3)
    a1 = cloud.agg("gw0", 1, n=10, k=2)
    assert cloud.post(a1).json() == {"accepted": True, "duplicate": False}  # only gw0 live: round 1 closes
    _, w1 = cloud.model()

    late = cloud.agg("gw1", 1, n=6, k=3, loss=0.4, devices=["d7"])
    answer = cloud.post(late)
    assert answer.status_code == 200
    assert answer.json() == {"accepted": True, "duplicate": False, "round": 2, "staleness": 1}
    assert cloud.post(late).json() == {"accepted": False, "duplicate": True}  # a retry counts once
    weight = 1 / math.sqrt(2)
    r1, r2 = cloud.round(1), cloud.round(2)
    assert (r1["k"], r1["n"], r1["carried"]) == (2, 10, [])  # the closed round is not rewritten
    assert r2["state"] == "open" and r2["gateways"] == {} and (r2["k"], r2["n"]) == (3, 6)
    [carried] = r2["carried"]
    assert carried == {"gw": "gw1", "round": 1, "k": 3, "n": 6, "loss": 0.4, "staleness": 1, "weight": weight}

    # gw1 is live again, so round 2 waits for its own aggregate too; the carried one is not that.
    a2 = cloud.agg("gw0", 2, n=8, k=1)
    assert cloud.post(a2).json() == {"accepted": True, "duplicate": False}
    assert cloud.round(2)["state"] == "open"
    b2 = cloud.agg("gw1", 2, n=4, k=1)
    assert cloud.post(b2).json() == {"accepted": True, "duplicate": False}
    r2 = cloud.round(2)
    assert r2["state"] == "closed" and (r2["k"], r2["n"]) == (5, 18)
    assert set(r2["gateways"]) == {"gw0", "gw1"} and len(r2["carried"]) == 1
    expected = w1 + (a2.sum.astype(np.float64) + b2.sum + weight * late.sum.astype(np.float64)) / 18
    np.testing.assert_allclose(cloud.model()[1], expected, rtol=1e-5, atol=1e-6)
    assert cloud.status()["history"][1]["n"] == 18 and cloud.status()["devices_seen"] == 1


def test_only_a_carried_aggregate_still_closes_the_round_at_its_deadline(start_cloud) -> None:
    cloud: Cloud = start_cloud(rounds=3, round_timeout=1.0)
    cloud.checkin("gw0")
    cloud.post(cloud.agg("gw0", 1))
    cloud.checkin("gw0", "gw1")  # round 2 waits for both until its deadline
    late = cloud.agg("gw1", 1, n=5)
    assert cloud.post(late).json()["round"] == 2
    cloud.wait_for(lambda: cloud.round(2)["state"] == "closed", timeout=5)
    r2 = cloud.round(2)
    assert r2["gateways"] == {} and (r2["k"], r2["n"]) == (2, 5) and r2["closed_at"] >= r2["deadline"]


def test_after_the_last_round_a_late_aggregate_is_refused(start_cloud) -> None:
    cloud: Cloud = start_cloud(rounds=1)
    cloud.post(cloud.agg("gw0", 1))
    assert cloud.status()["state"] == "done"
    response = cloud.post(cloud.agg("gw1", 1))
    assert response.status_code == 409 and response.json() == {"detail": {"reason": "late"}}
