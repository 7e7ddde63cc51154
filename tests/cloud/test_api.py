"""The REST API over a real uvicorn server: auth, body checks, idempotency, 409s, FedAvg numbers, evaluation, views."""

from __future__ import annotations

import re

import msgpack
import numpy as np
from cloud_client import TOKENS, Cloud
from prometheus_scrape import scrape

KEYS_CURRENT = {
    "round",
    "base",
    "state",
    "deadline",
    "layers",
    "lr",
    "epochs",
    "batch",
    "chunk",
    "min_battery",
    "gateway_rounds",
}
KEYS_ROUND = {"round", "state", "base", "k", "n", "accuracy", "loss", "gateways"}
KEYS_STATUS = {"fleet", "round", "model_version", "state", "gateways", "devices_seen", "history"}
KEYS_HISTORY = {"round", "accuracy", "loss", "k", "n", "bytes_up", "closed_at"}


def test_post_needs_a_valid_token_of_the_posting_gateway(cloud: Cloud) -> None:
    agg = cloud.agg("gw0", 1)
    path = "/api/v1/rounds/1/aggregates"
    missing = cloud.http.post(path, content=agg.encode(), headers={"Content-Type": "application/msgpack"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["detail"]["reason"] == "unauthorized"
    wrong = cloud.http.post(path, content=agg.encode(), headers={"Authorization": "Bearer not-a-token"})
    assert wrong.status_code == 401
    basic = cloud.http.post(path, content=agg.encode(), headers={"Authorization": f"Basic {TOKENS['gw0']}"})
    assert basic.status_code == 401
    other = cloud.post(agg, gw="gw1")  # gw1's valid token, gw0's aggregate
    assert other.status_code == 403 and other.json()["detail"]["reason"] == "forbidden"
    assert cloud.round(1)["gateways"] == {}


def test_undecodable_bodies_are_400_with_a_reason(cloud: Cloud) -> None:
    good = msgpack.unpackb(cloud.agg("gw0", 1).encode())
    cases = {
        b"\xc1 not msgpack": "decode",
        msgpack.packb([1, 2, 3]): "decode",
        msgpack.packb({**good, "v": 2}): "version",
        msgpack.packb({**good, "t": "up"}): "schema",
        msgpack.packb({k: v for k, v in good.items() if k != "n"}): "schema",
        msgpack.packb({**good, "n": 0}): "schema",
        msgpack.packb({**good, "loss": float("nan")}): "loss",
    }
    for body, reason in cases.items():
        response = cloud.post(body, gw="gw0", rnd=1)
        assert response.status_code == 400, (reason, response.text)
        assert response.json()["detail"]["reason"] == reason
    mismatch = cloud.post(cloud.agg("gw0", 1), rnd=2)
    assert mismatch.status_code == 400 and mismatch.json()["detail"]["reason"] == "round_mismatch"
    assert cloud.round(1)["gateways"] == {}


def test_a_sum_of_the_wrong_length_is_422(cloud: Cloud) -> None:
    params = cloud.spec.param_count
    for size in (params - 1, params + 1, 0):
        response = cloud.post(cloud.agg("gw0", 1, sum=np.ones(size, np.float32)))
        assert response.status_code == 422 and response.json()["detail"]["reason"] == "length"
    assert cloud.round(1)["k"] == 0


def test_a_repeat_is_a_duplicate_and_changes_nothing(cloud: Cloud) -> None:
    cloud.checkin("gw0", "gw1")  # both live: round 1 waits for both
    first = cloud.agg("gw0", 1, n=12, k=3, loss=0.5)
    assert cloud.post(first).json() == {"accepted": True, "duplicate": False}
    before = cloud.round(1)
    again = cloud.agg("gw0", 1, n=99, k=9, loss=2.0)  # different numbers, same (gw, round)
    for agg in (first, again):
        response = cloud.post(agg)
        assert response.status_code == 200 and response.json() == {"accepted": False, "duplicate": True}
    assert cloud.round(1) == before and before["state"] == "open"
    assert before["gateways"] == {"gw0": {"k": 3, "n": 12, "loss": 0.5}}

    second = cloud.agg("gw1", 1, n=8, k=2)
    assert cloud.post(second).json()["accepted"] is True
    _, w1 = cloud.model()
    w0 = cloud.spec.init(cloud.settings.seed)
    expected = w0 + (first.sum.astype(np.float64) + second.sum) / (12 + 8)
    np.testing.assert_allclose(w1, expected, rtol=1e-6, atol=1e-6)
    # after the close a repeat is still answered as a duplicate, whatever the round's state
    assert cloud.post(first).json() == {"accepted": False, "duplicate": True}
    assert cloud.round(1)["n"] == 20


def test_future_and_base_mismatch_are_409(cloud: Cloud) -> None:
    assert cloud.post(cloud.agg("gw0", 1)).status_code == 200  # only gw0 is live: round 1 closes
    assert cloud.current()["round"] == 2
    cases = [
        (cloud.agg("gw1", 3), "future_round"),
        (cloud.agg("gw1", 1, base=1), "base_mismatch"),  # a closed round's aggregate from another base
        (cloud.agg("gw1", 2, base=0), "base_mismatch"),
        (cloud.agg("gw1", 2, base=2), "base_mismatch"),
    ]
    for agg, reason in cases:
        response = cloud.post(agg)
        assert response.status_code == 409 and response.json() == {"detail": {"reason": reason}}, reason
    assert cloud.round(2)["gateways"] == {} and cloud.status()["model_version"] == 1


def test_closing_applies_fedavg_and_evaluates_the_new_model(cloud: Cloud) -> None:
    cloud.checkin("gw0", "gw1")
    a = cloud.agg("gw0", 1, n=30, k=4, loss=0.9, bytes_up=1500, devices=["d0000", "d0002"])
    b = cloud.agg("gw1", 1, n=10, k=1, loss=0.5, bytes_up=400, devices=["d0001", "d0002"])
    assert cloud.post(a).json()["accepted"] and cloud.round(1)["state"] == "open"
    assert cloud.post(b).json()["accepted"]  # the last live gateway: the round closes in this request

    spec, data = cloud.spec, cloud.dataset
    w0 = spec.init(cloud.settings.seed)
    expected = (w0 + ((a.sum.astype(np.float64) + b.sum) / 40)).astype(np.float32)
    version, w1 = cloud.model()
    assert version == 1
    np.testing.assert_allclose(w1, expected, rtol=1e-6, atol=1e-7)
    accuracy, loss = spec.evaluate(w1, data.x_test, data.y_test)

    r1 = cloud.round(1)
    assert set(r1) >= KEYS_ROUND and r1["state"] == "closed" and r1["base"] == 0
    assert (r1["k"], r1["n"], r1["bytes_up"]) == (5, 40, 1900)
    assert r1["accuracy"] == accuracy and r1["loss"] == loss
    assert r1["train_loss"] == (30 * 0.9 + 10 * 0.5) / 40
    assert r1["gateways"] == {"gw0": {"k": 4, "n": 30, "loss": 0.9}, "gw1": {"k": 1, "n": 10, "loss": 0.5}}

    status = cloud.status()
    assert status["history"][0]["accuracy"] == accuracy and status["devices_seen"] == 3
    acc0, _ = spec.evaluate(w0, data.x_test, data.y_test)
    assert status["initial_accuracy"] == acc0
    current = cloud.current()
    assert (current["round"], current["base"], current["state"]) == (2, 1, "open")


def test_server_lr_scales_the_averaged_delta(start_cloud) -> None:
    cloud = start_cloud(server_lr=0.5)
    agg = cloud.agg("gw0", 1, n=4)
    cloud.post(agg)
    w0 = cloud.spec.init(0)
    np.testing.assert_allclose(cloud.model()[1], w0 + 0.5 * agg.sum / 4, rtol=1e-6, atol=1e-7)


def test_model_latest_msgpack_and_json_agree(cloud: Cloud) -> None:
    cloud.post(cloud.agg("gw0", 1))
    packed_response = cloud.http.get("/api/v1/model/latest")
    assert packed_response.headers["content-type"] == "application/msgpack"
    packed = msgpack.unpackb(packed_response.content)
    as_json = cloud.get("/api/v1/model/latest", params={"format": "json"})
    assert set(packed) == set(as_json) == {"v", "t", "version", "layers", "w"}
    assert packed["v"] == as_json["v"] == 1 and packed["t"] == as_json["t"] == "model"
    assert packed["version"] == as_json["version"] == 1
    assert packed["layers"] == as_json["layers"] == list(cloud.dataset.layers)
    w = np.frombuffer(packed["w"], dtype="<f4")
    assert w.size == cloud.spec.param_count
    np.testing.assert_array_equal(w, np.asarray(as_json["w"], dtype=np.float32))
    assert cloud.http.get("/api/v1/model/latest", params={"format": "xml"}).status_code == 422


def test_views_have_the_contract_shape(cloud: Cloud) -> None:
    current = cloud.current()
    s = cloud.settings
    assert set(current) >= KEYS_CURRENT
    assert current == {
        **current,
        "round": 1,
        "base": 0,
        "state": "open",
        "layers": list(cloud.dataset.layers),
        "lr": s.lr,
        "epochs": s.epochs,
        "batch": s.batch,
        "chunk": s.chunk,
        "min_battery": s.min_battery,
        "gateway_rounds": s.gateway_rounds,
    }
    assert cloud.http.get("/api/v1/rounds/2").status_code == 404
    assert cloud.http.get("/api/v1/rounds/0").status_code == 422

    cloud.post(cloud.agg("gw0", 1, bytes_up=321, devices=["d0000"]))
    status = cloud.status()
    assert set(status) >= KEYS_STATUS
    assert (status["fleet"], status["round"], status["model_version"], status["state"]) == ("default", 2, 1, "running")
    assert status["devices_seen"] == 1
    gateways = {g["id"]: g for g in status["gateways"]}
    assert set(gateways) == {"gw0", "gw1"}
    assert gateways["gw0"]["rounds_reported"] == 1 and isinstance(gateways["gw0"]["last_seen"], float)
    assert gateways["gw1"] == {"id": "gw1", "last_seen": None, "rounds_reported": 0}
    (entry,) = status["history"]
    assert set(entry) >= KEYS_HISTORY and entry["round"] == 1 and entry["bytes_up"] == 321
    assert 0.0 <= entry["accuracy"] <= 1.0 and isinstance(entry["closed_at"], float)
    assert abs(entry["closed_at"] - gateways["gw0"]["last_seen"]) < 5


def test_a_get_with_a_valid_token_is_a_check_in(cloud: Cloud) -> None:
    seen = lambda: {g["id"]: g["last_seen"] for g in cloud.status()["gateways"]}  # noqa: E731
    cloud.http.get("/api/v1/status", headers={"Authorization": "Bearer bogus"}).raise_for_status()
    assert seen() == {"gw0": None, "gw1": None}
    cloud.get("/api/v1/model/latest", gw="gw1", params={"format": "json"})
    assert seen()["gw1"] is not None and seen()["gw0"] is None


def test_metrics_count_outcomes(cloud: Cloud) -> None:
    cloud.checkin("gw0", "gw1")
    agg = cloud.agg("gw0", 1, devices=["d1", "d2"])
    bodies = [agg.encode(), agg.encode(), cloud.agg("gw1", 1, sum=np.ones(3, np.float32)).encode()]
    bodies.append(cloud.agg("gw1", 2).encode())
    senders = [("gw0", 1), ("gw0", 1), ("gw1", 1), ("gw1", 2)]
    answers = [cloud.post(body, gw=gw, rnd=rnd).status_code for body, (gw, rnd) in zip(bodies, senders, strict=True)]
    assert answers == [200, 200, 422, 409]
    cloud.http.post("/api/v1/rounds/1/aggregates", content=b"")  # no token: refused before the body is read
    scraped = scrape(f"{cloud.url}/metrics")
    assert scraped.labelled("iotfl_aggregates_total", "result") == {
        "accepted": 1, "carried": 0, "duplicate": 1, "late": 0, "rejected": 3
    }  # fmt: skip
    assert scraped.labelled("iotfl_aggregates_rejected_total", "reason") == {
        "length": 1, "future_round": 1, "unauthorized": 1
    }  # fmt: skip
    assert scraped.value("iotfl_aggregate_bytes_total") == sum(len(body) for body in bodies)
    assert scraped.value("iotfl_aggregate_post_seconds_count") == 5
    assert scraped.value("iotfl_aggregate_post_seconds_bucket", le="+Inf") == 5
    assert scraped.value("iotfl_current_round") == 1 and scraped.value("iotfl_model_version") == 0
    assert scraped.value("iotfl_rounds_closed_total") == 0 and scraped.value("iotfl_done") == 0
    assert scraped.value("iotfl_gateways_seen") == 2 and scraped.value("iotfl_devices_seen") == 2
    assert 0 <= scraped.value("iotfl_last_accuracy") <= 1
    assert scraped.types["iotfl_rounds_closed"] == "counter"
    assert scraped.types["iotfl_aggregate_post_seconds"] == "histogram"


def test_metrics_speak_openmetrics_when_asked(cloud: Cloud) -> None:
    response = cloud.http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n") and "iotfl_current_round 1" in response.text


def test_dashboard_docs_and_health(cloud: Cloud) -> None:
    page = cloud.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(assets) == ["static/dashboard.css", "static/dashboard.js"]  # served by the cloud: no CDN
    script, style = cloud.http.get("/static/dashboard.js"), cloud.http.get("/static/dashboard.css")
    assert script.headers["content-type"].startswith("text/javascript") and "setInterval(poll, POLL_MS)" in script.text
    assert all(f'"api/v1/{path}' in script.text for path in ("status", "gateways", "devices?"))
    assert style.headers["content-type"].startswith("text/css")
    assert not re.search(r"https?://", script.text + style.text)
    assert cloud.http.get("/static/index.html").status_code == 404  # only the listed assets
    assert cloud.get("/healthz") == {"status": "ok"}
    assert cloud.http.get("/docs").status_code == 200
    paths = cloud.get("/openapi.json")["paths"]
    for path in (
        "/api/v1/rounds/current",
        "/api/v1/rounds/{round}",
        "/api/v1/rounds/{round}/aggregates",
        "/api/v1/status",
        "/api/v1/model/latest",
        "/api/v1/gateways",
        "/api/v1/gateways/{gw}/report",
        "/api/v1/devices",
        "/healthz",
        "/metrics",
    ):
        assert path in paths, path
