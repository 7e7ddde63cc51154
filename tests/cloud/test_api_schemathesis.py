"""Hostile HTTP input: schemathesis over the cloud's own /openapi.json on a real uvicorn, plus aggregates that pass
the msgpack decoder with extreme values; no 5xx, and every answer documented and matching its schema."""

from __future__ import annotations

import copy
import http.client
import json
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
import schemathesis
from cloud_client import TOKENS, Cloud
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.serialization import Binary

from flcore.messages import MAX_INT32, MAX_LOSS, MAX_SEQ

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _plain(value: Any) -> Any:
    """schemathesis' generated body with its ``Binary`` wrappers turned back into bytes."""
    if isinstance(value, Binary):
        return value.data
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@schemathesis.serializer("application/msgpack")
def _msgpack(_ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    if isinstance(value, bytes | Binary):
        return _plain(value)
    try:
        return msgpack.packb(_plain(value), use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return b"\xc1"  # never valid msgpack: the cloud must still answer 400, not fail


EXAMPLES_PER_OPERATION = 50
AGGREGATES = "/api/v1/rounds/{round}/aggregates"


def _deep(spec: dict[str, Any], params: int) -> dict[str, Any]:
    """The served spec with the aggregate POST's inputs narrowed to what gets past the decoder (a known gateway, an
    early round, a ``sum`` of 4·P bytes), so generated bodies also reach the gateway, round and storage checks."""
    spec = copy.deepcopy(spec)
    post = spec["paths"][AGGREGATES]["post"]
    for param in post["parameters"]:
        if param["name"] == "round":
            param["schema"]["maximum"] = 4
    body = post["requestBody"]["content"]["application/msgpack"]["schema"]["properties"]
    body["gw"]["enum"] = sorted(TOKENS)
    body["round"]["maximum"] = body["base"]["maximum"] = 4
    body["sum"].update(minLength=4 * params, maxLength=4 * params)
    return spec


@pytest.mark.parametrize(
    ("mode", "deep"),
    [(GenerationMode.POSITIVE, False), (GenerationMode.NEGATIVE, False), (GenerationMode.POSITIVE, True)],
    ids=["positive", "negative", "positive-deep"],
)
def test_every_operation_answers_within_its_schema(cloud: Cloud, mode: GenerationMode, deep: bool) -> None:
    """Each operation of the served /openapi.json, each generated request sent anonymous, with a gateway's token,
    and with an unknown token: no 5xx, a documented status code, the documented content type and body schema."""
    spec = cloud.http.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(_deep(spec, cloud.spec.param_count) if deep else spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {f"POST {AGGREGATES}", "GET /api/v1/status"}
    for operation in operations:
        parts = (operation.path_parameters, operation.query, operation.headers, operation.cookies, operation.body)
        if mode is GenerationMode.NEGATIVE and not any(len(part) for part in parts):
            continue  # nothing in the request to make invalid

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(mode))
        def probe(case: schemathesis.Case) -> None:
            for token in (None, TOKENS["gw0"], "not-a-token"):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                case.call_and_validate(base_url=cloud.url, headers=headers, checks=CHECKS, timeout=10)

        probe()


def test_openapi_documents_every_operation_and_the_msgpack_body(cloud: Cloud) -> None:
    spec = cloud.http.get("/openapi.json").json()
    post = spec["paths"][AGGREGATES]["post"]
    body = post["requestBody"]["content"]["application/msgpack"]["schema"]
    assert set(body["required"]) == {"v", "t", "gw", "round", "base", "n", "k", "sum", "loss"}
    assert {"200", "400", "401", "403", "409", "413", "422"} <= set(post["responses"])
    assert {"200", "404", "422"} <= set(spec["paths"]["/api/v1/rounds/{round}"]["get"]["responses"])
    assert set(spec["paths"]) >= {
        "/api/v1/rounds/current",
        "/api/v1/status",
        "/api/v1/model/latest",
        "/healthz",
        "/metrics",
    }


extreme_ints = st.sampled_from([0, 1, 2, 2**31 - 1, 2**31, 2**63 - 1, 2**64 - 1, -1, -(2**63)])
extreme_floats = st.sampled_from([0.0, -0.0, 1e-300, MAX_LOSS, -MAX_LOSS, 1e300, float("nan"), float("inf")])


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_aggregates_with_extreme_values_never_fail_the_server(cloud: Cloud, data: st.DataObject) -> None:
    """Well-formed aggregates for the open round with extreme n, k, loss, bytes, devs and sums: 200 or a 4xx."""
    rnd = cloud.current()["round"]
    p = cloud.spec.param_count
    obj: dict[str, Any] = {
        "v": 1,
        "t": "agg",
        "gw": "gw0",
        "round": rnd,
        "base": rnd - 1,
        "n": data.draw(extreme_ints | st.integers(1, 10**6)),
        "k": data.draw(extreme_ints | st.integers(1, 100)),
        "sum": data.draw(
            st.sampled_from([0.0, 1.0, 3.4e38, float("nan"), float("-inf")]).map(
                lambda x: np.full(p, x, dtype="<f4").tobytes()
            )
            | st.binary(max_size=8)
        ),
        "loss": data.draw(extreme_floats | st.floats(-1e3, 1e3)),
        "bytes": data.draw(extreme_ints),
        "devs": data.draw(st.lists(st.sampled_from(["d1", "x" * 64, "bad id", ""]), max_size=3)),
    }
    for key in data.draw(st.lists(st.sampled_from(sorted(obj)), max_size=2, unique=True)):
        obj.pop(key)
    response = cloud.post(msgpack.packb(obj, use_bin_type=True), gw="gw0", rnd=rnd)
    assert response.status_code in (200, 400, 403, 409, 413, 422), response.text
    if response.status_code != 200:
        assert "reason" in response.json()["detail"]
    # Whatever was stored, the read side still serves valid JSON.
    reads = ("/api/v1/status", f"/api/v1/rounds/{rnd}", "/api/v1/rounds/current", "/api/v1/model/latest?format=json")
    for path in (*reads, "/metrics"):
        assert cloud.http.get(path).status_code == 200


def test_a_lying_n_is_refused_with_n_range(cloud: Cloud) -> None:
    """An aggregate claiming more samples than k updates can carry buys no weight: 400 n_range, nothing stored."""
    rnd = cloud.current()["round"]
    cap = cloud.settings.max_samples
    response = cloud.post(cloud.agg("gw0", rnd, n=2 * cap + 1, k=2))
    assert response.status_code == 400
    assert response.json()["detail"]["reason"] == "n_range"
    assert cloud.round(rnd)["gateways"] == {}
    assert cloud.post(cloud.agg("gw0", rnd, n=2 * cap, k=2)).status_code == 200


@pytest.mark.parametrize("rnd", [0, MAX_INT32 + 1, 2**63, -5])
def test_out_of_range_round_paths_are_422(cloud: Cloud, rnd: int) -> None:
    assert cloud.http.get(f"/api/v1/rounds/{rnd}").status_code == 422
    response = cloud.post(cloud.agg("gw0", 1), rnd=rnd)
    assert response.status_code == 422


def test_a_huge_declared_body_is_refused_before_it_is_read(cloud: Cloud) -> None:
    """413 from the Content-Length alone: the cap applies before any byte of the body is read or parsed."""
    host, port = httpx.URL(cloud.url).host, httpx.URL(cloud.url).port
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest("POST", "/api/v1/rounds/1/aggregates")
        for name, value in {**cloud.auth("gw0"), "Content-Type": "application/msgpack"}.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(MAX_SEQ))
        conn.endheaders(b"\x00" * 16)  # far less than declared: the server must not wait for the rest
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["detail"]["reason"] == "too_large"
    finally:
        conn.close()
