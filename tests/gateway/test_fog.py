"""The fog gateway's rules (``gateway.fog``) without an upstream, and its child-facing HTTP API on a real server."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from flcore.fedbuff import staleness_weight
from flcore.messages import Agg
from gateway.cloud_client import CloudClient, Model, RoundInfo
from gateway.fog import FogNode
from gateway.fog_http import FogServer
from gateway.fog_store import FogStore
from gateway.outbox import Outbox

LAYERS = (4, 3, 2)
P = 4 * 3 + 3 + 3 * 2 + 2


def _info(rnd: int, deadline: float = 1_000.0) -> RoundInfo:
    return RoundInfo(rnd, rnd - 1, "open", deadline, LAYERS, 0.1, 1, 8, 32, 0.2)


def _model(version: int) -> Model:
    return Model(version, LAYERS, np.full(P, 0.5 * version, dtype=np.float32))


def _agg(gw: str, rnd: int, base: int, n: int, k: int, value: float, loss: float = 1.0) -> Agg:
    return Agg(gw, rnd, base, n, k, np.full(P, value, dtype=np.float32), loss, 10 * k, (f"{gw}-d0",))


def _fog(state_dir: Path) -> FogNode:
    upstream = CloudClient("http://127.0.0.1:9", "unused")  # never called: the tests drive follow() themselves
    return FogNode(
        "region0",
        upstream,
        Outbox(state_dir, "region0"),
        FogStore(state_dir, "region0"),
        threading.Event(),
        round_timeout=30,
        forward_margin=4,
        poll_interval=0.5,
    )


@pytest.fixture
def node(tmp_path: Path) -> FogNode:
    fog = _fog(tmp_path)
    fog.follow(_info(1), _model(0), now=100.0)
    for child in ("site0", "site1"):
        fog.checkin(child)
    return fog


def test_children_sum_into_one_aggregate_once_every_live_child_reported(node: FogNode) -> None:
    assert node.submit("site0", _agg("site0", 1, 0, 30, 3, 2.0, loss=1.0)) == "accepted"
    assert node.submit("site0", _agg("site0", 1, 0, 30, 3, 9.0)) == "duplicate"
    node.follow(_info(1), _model(0), now=101.0)
    assert node.outbox.depth() == 0  # site1 is live and has not reported
    assert node.submit("site1", _agg("site1", 1, 0, 10, 1, 4.0, loss=3.0)) == "accepted"
    node.follow(_info(1), _model(0), now=102.0)
    entry = node.outbox.next()
    assert entry is not None and node.outbox.depth() == 1
    agg = Agg.decode(entry.body, params=P)
    assert (agg.gw, agg.round, agg.base, agg.n, agg.k) == ("region0", 1, 0, 40, 4)
    np.testing.assert_allclose(agg.sum, np.full(P, 6.0))
    assert agg.loss == pytest.approx((30 * 1.0 + 10 * 3.0) / 40)
    assert agg.bytes_up == 40 and agg.devices == ("site0-d0", "site1-d0")
    assert node.submit("site1", _agg("site1", 1, 0, 10, 1, 4.0)) == "duplicate"  # after forwarding, still


def test_the_round_closes_at_the_childrens_deadline_with_what_came(node: FogNode) -> None:
    node.submit("site0", _agg("site0", 1, 0, 30, 3, 2.0))
    node.follow(_info(1), _model(0), now=997.0)  # deadline 1000 − margin 4 / 2 = 998: not yet
    assert node.outbox.depth() == 0
    node.follow(_info(1), _model(0), now=998.5)
    assert node.outbox.depth() == 1
    current = node.current()
    assert current is not None and current.deadline == 996.0  # the children close forward_margin earlier


def test_wrong_rounds_are_refused_and_a_late_child_is_carried_with_its_staleness_weight(node: FogNode) -> None:
    assert node.submit("site0", _agg("site0", 2, 1, 5, 1, 1.0)) == "future_round"
    assert node.submit("site0", _agg("site0", 1, 1, 5, 1, 1.0)) == "base_mismatch"
    node.submit("site0", _agg("site0", 1, 0, 30, 3, 2.0))
    node.follow(_info(2), _model(1), now=200.0)  # upstream moved on: round 1 is forwarded without site1
    assert node.outbox.depth() == 1
    assert node.submit("site1", _agg("site1", 1, 0, 10, 1, 4.0)) == "carried"
    assert node.submit("site1", _agg("site1", 1, 0, 10, 1, 4.0)) == "duplicate"
    assert node.submit("site0", _agg("site0", 2, 1, 20, 2, 1.0)) == "accepted"
    assert node.submit("site1", _agg("site1", 2, 1, 10, 1, 1.0)) == "accepted"
    node.follow(_info(2), _model(1), now=201.0)
    node.outbox.finish(1, "accepted")
    entry = node.outbox.next()
    assert entry is not None
    agg = Agg.decode(entry.body, params=P)
    assert (agg.round, agg.n, agg.k) == (2, 40, 4)
    np.testing.assert_allclose(agg.sum, np.full(P, 4.0 * staleness_weight(1) + 2.0), rtol=1e-6)


def test_the_http_api_answers_children_as_the_cloud_does(node: FogNode) -> None:
    server = FogServer(node, {"site0": "s0", "site1": "s1"}, "127.0.0.1", 0)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        child = CloudClient(base, "s0")
        info, model = child.current(), child.model()
        assert (info.round, info.base, info.deadline, info.layers) == (1, 0, 996.0, LAYERS)
        assert model.version == 0 and np.array_equal(model.w, _model(0).w)
        body = _agg("site0", 1, 0, 30, 3, 2.0).encode()
        assert child.send(1, body).result == "accepted"
        assert child.send(1, body).result == "duplicate"
        post = f"{base}/api/v1/rounds/1/aggregates"
        assert httpx.post(post, content=body).status_code == 401
        wrong = httpx.post(post, content=body, headers={"Authorization": "Bearer s1"})
        assert wrong.status_code == 403 and wrong.json()["detail"]["reason"] == "forbidden"
        bad = httpx.post(post, content=b"\x00junk", headers={"Authorization": "Bearer s1"})
        assert bad.status_code == 400
        assert child.send(2, _agg("site0", 2, 1, 5, 1, 1.0).encode()).result == "future_round"
        child.close()
    finally:
        server.stop()


def test_a_restarted_fog_rebuilds_the_open_round_and_knows_what_it_accepted(node: FogNode, tmp_path: Path) -> None:
    assert node.submit("site0", _agg("site0", 1, 0, 30, 3, 2.0, loss=1.0)) == "accepted"
    node.store.close()  # the process dies here: nothing forwarded, nothing but the state file remains
    again = _fog(tmp_path)
    assert again.submit("site0", _agg("site0", 1, 0, 30, 3, 9.0)) == "duplicate"  # before the round reopened too
    again.follow(_info(1), _model(0), now=101.0)
    again.checkin("site0")
    assert again.submit("site0", _agg("site0", 1, 0, 30, 3, 9.0)) == "duplicate"
    assert again.submit("site1", _agg("site1", 1, 0, 10, 1, 4.0, loss=3.0)) == "accepted"
    again.follow(_info(1), _model(0), now=102.0)
    entry = again.outbox.next()
    assert entry is not None and (entry.round, entry.k, entry.n) == (1, 4, 40)
    agg = Agg.decode(entry.body)
    np.testing.assert_allclose(agg.sum, np.full(P, 6.0), rtol=1e-6)


def test_a_round_an_earlier_run_never_forwarded_is_queued_once_upstream_moved_on(node: FogNode, tmp_path: Path) -> None:
    assert node.submit("site0", _agg("site0", 1, 0, 30, 3, 2.0)) == "accepted"
    node.store.close()
    again = _fog(tmp_path)
    again.follow(_info(2), _model(1), now=200.0)
    entry = again.outbox.next()
    assert entry is not None and (entry.round, entry.base, entry.k, entry.n) == (1, 0, 3, 30)
    again.follow(_info(2), _model(1), now=201.0)
    assert again.outbox.depth() == 1  # queued once, not per poll
