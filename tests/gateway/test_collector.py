"""The collector's rules 1–5 without a network: every reason code, dedup, round checks and the running sums."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from gateway_peers import P, make_up

from flcore.topics import GatewayTopics
from gateway.collector import REMEMBERED_ROUNDS, Collector
from gateway.verdicts import SubRound

TOPICS = GatewayTopics("default", "gw0")


def up_topic(dev: str) -> str:
    return f"iotfl/default/gw/gw0/up/{dev}"


@pytest.fixture
def collector() -> Collector:
    c = Collector(TOPICS, max_bytes=4096, max_samples=1000)
    c.open(SubRound(round=3, sub=0, base=2, params=P))
    return c


def raw_up(**overrides: object) -> bytes:
    up = make_up("d1", round=3, base=2)
    fields = msgpack.unpackb(up.encode(), raw=False)
    for key, value in overrides.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return msgpack.packb(fields, use_bin_type=True)


def test_valid_update_is_accepted_and_folded(collector: Collector) -> None:
    up = make_up("d1", round=3, base=2, n=7, seq=5)
    verdict = collector.ingest(up_topic("d1"), up.encode())
    assert verdict is not None and verdict.dev == "d1"
    assert (verdict.ack.status, verdict.ack.reason, verdict.ack.round, verdict.ack.seq) == ("accepted", "", 3, 5)
    assert collector.sum is not None and collector.sum.k == 1 and collector.sum.n == 7
    assert collector.counters == {"accepted": 1}


@pytest.mark.parametrize("topic", [up_topic("bad.id"), up_topic("x" * 65), up_topic(""), "iotfl/default/gw/gw1/up/d1"])
def test_invalid_topic_is_dropped_without_ack(collector: Collector, topic: str) -> None:
    assert collector.ingest(topic, make_up("d1", round=3, base=2).encode()) is None
    assert collector.counters == {"topic": 1}
    assert collector.sum is not None and collector.sum.k == 0


BAD = {
    "decode": b"\xc1not msgpack",
    "not_a_map": msgpack.packb([1, 2, 3]),
    "version": raw_up(v=2),
    "type": raw_up(t="task"),
    "missing": raw_up(n=None),
    "wrong_type": raw_up(n="10"),
    "loss_type": raw_up(loss="0.5"),
    "dev_mismatch": raw_up(dev="d2"),
    "n_zero": raw_up(n=0),
    "n_big": raw_up(n=1001),
    "chunk": raw_up(chunk=0),
    "q_len": raw_up(q=b"\x01" * (P - 1)),
    "scales_len": raw_up(scales=b"\x00" * 4),
    "scale_neg": raw_up(scales=np.array([-1, 1, 1], "<f4").tobytes()),
    "scale_nan": raw_up(scales=np.array([1, math.nan, 1], "<f4").tobytes()),
    "loss_nan": raw_up(loss=math.nan),
    "loss_inf": raw_up(loss=math.inf),
    "too_large": raw_up(pad=b"\x00" * 5000),
    "meta": raw_up(meta=[1]),
    "meta_battery": raw_up(meta={"battery": "full"}),
}
EXPECTED = {
    "decode": "decode", "not_a_map": "decode", "version": "version", "type": "schema", "missing": "schema",
    "wrong_type": "schema", "loss_type": "schema", "dev_mismatch": "dev_mismatch", "n_zero": "n_range",
    "n_big": "n_range", "chunk": "schema", "q_len": "length", "scales_len": "length", "scale_neg": "scale",
    "scale_nan": "scale", "loss_nan": "loss", "loss_inf": "loss", "too_large": "too_large", "meta": "schema",
    "meta_battery": "schema",
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_invalid_payload_is_rejected_with_its_reason(collector: Collector, case: str) -> None:
    verdict = collector.ingest(up_topic("d1"), BAD[case])
    assert verdict is not None and verdict.update is None
    assert (verdict.ack.status, verdict.ack.reason) == ("rejected", EXPECTED[case])
    readable = case not in ("decode", "not_a_map", "too_large")
    assert (verdict.ack.round, verdict.ack.seq) == ((3, 0) if readable else (None, None))
    assert collector.counters == {EXPECTED[case]: 1}
    assert collector.sum is not None and collector.sum.k == 0 and not collector.sum.total.any()
    # A rejected message does not use up the device's slot.
    assert collector.ingest(up_topic("d1"), make_up("d1", round=3, base=2).encode()).ack.status == "accepted"


def test_round_rules(collector: Collector) -> None:
    cases = [
        (make_up("d1", round=2, base=2), ("late", "late")),
        (make_up("d1", round=4, base=2), ("rejected", "future_round")),
        (make_up("d1", round=3, base=1), ("rejected", "base_mismatch")),
        (make_up("d1", round=3, base=2, sub=1), ("rejected", "future_round")),
    ]
    for up, expected in cases:
        verdict = collector.ingest(up_topic("d1"), up.encode())
        assert (verdict.ack.status, verdict.ack.reason) == expected
    assert collector.sum.k == 0
    assert collector.counters == {"late": 1, "future_round": 2, "base_mismatch": 1}


def test_dedup_first_wins_and_redelivery_after_close_is_duplicate(collector: Collector) -> None:
    first = make_up("d1", round=3, base=2, n=5, seq=1)
    other = make_up("d1", round=3, base=2, n=9, seq=2, delta=np.ones(P, np.float32))
    assert collector.ingest(up_topic("d1"), first.encode()).ack.status == "accepted"
    assert collector.ingest(up_topic("d1"), first.encode()).ack.status == "duplicate"
    second = collector.ingest(up_topic("d1"), other.encode())
    assert (second.ack.status, second.ack.seq) == ("duplicate", 2)
    total = collector.close()
    assert total.k == 1 and total.n == 5
    np.testing.assert_allclose(total.total, 5 * first.delta())
    # After the sub-round closed: the same update is still `duplicate`, a new device's is `late`.
    assert collector.ingest(up_topic("d1"), first.encode()).ack.status == "duplicate"
    assert collector.ingest(up_topic("d2"), make_up("d2", round=3, base=2).encode()).ack.status == "late"
    # In the next sub-round and the next round the old key is still remembered; the new keys are fresh.
    collector.open(SubRound(3, 1, 2, P))
    assert collector.ingest(up_topic("d1"), first.encode()).ack.status == "duplicate"
    assert collector.ingest(up_topic("d1"), make_up("d1", round=3, base=2, sub=1).encode()).ack.status == "accepted"
    collector.open(SubRound(4, 0, 3, P))
    assert collector.ingest(up_topic("d1"), first.encode()).ack.status == "duplicate"
    assert collector.counters["duplicate"] == 5


def test_dedup_memory_is_bounded(collector: Collector) -> None:
    first = make_up("d1", round=3, base=2)
    collector.ingest(up_topic("d1"), first.encode())
    for r in range(4, 4 + REMEMBERED_ROUNDS):
        collector.open(SubRound(r, 0, r - 1, P))
    assert collector.ingest(up_topic("d1"), first.encode()).ack.status == "late"


def test_no_open_round_answers_future_round() -> None:
    c = Collector(TOPICS)
    verdict = c.ingest(up_topic("d1"), make_up("d1").encode())
    assert (verdict.ack.status, verdict.ack.reason) == ("rejected", "future_round")


def test_unknown_keys_and_typed_meta_are_accepted(collector: Collector) -> None:
    payload = raw_up(future_key={"x": 1}, meta={"battery": 0.5, "train_ms": 12, "ram_class": "class2", "fw": "1"})
    assert collector.ingest(up_topic("d1"), payload).ack.status == "accepted"


def test_running_sums_equal_direct_numpy() -> None:
    rng = np.random.default_rng(7)
    c = Collector(TOPICS)
    c.open(SubRound(1, 0, 0, P))
    ups = [
        make_up(f"d{i}", n=int(rng.integers(1, 500)), loss=float(rng.uniform(0, 3)), delta=rng.normal(0, 1, P))
        for i in range(12)
    ]
    sizes = 0
    for up in ups:
        payload = up.encode()
        sizes += len(payload)
        assert c.ingest(up_topic(up.dev), payload).ack.status == "accepted"
    c.ingest(up_topic("d0"), ups[0].encode())  # a duplicate adds bytes, nothing else
    sizes += len(ups[0].encode())
    total = c.close()
    # the sum takes n·q·scale exactly in float64 (no float32 delta in between), so compare with float64 products
    deltas = np.stack([u.delta(np.float64) for u in ups])
    ns = np.array([u.n for u in ups], dtype=np.float64)
    losses = np.array([u.loss for u in ups])
    np.testing.assert_allclose(total.total, (ns[:, None] * deltas).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(total.mean_delta(), (ns[:, None] * deltas).sum(axis=0) / ns.sum(), rtol=1e-6)
    assert (total.n, total.k) == (int(ns.sum()), 12)
    totals = c.totals
    assert totals.n == int(ns.sum()) and totals.k == 12 and totals.bytes_up == sizes
    assert totals.loss == pytest.approx(float((ns * losses).sum() / ns.sum()), rel=1e-12)
    assert sorted(totals.devices) == sorted(u.dev for u in ups)


def test_round_totals_count_devices_once_across_sub_rounds() -> None:
    c = Collector(TOPICS)
    c.open(SubRound(1, 0, 0, P))
    c.ingest(up_topic("a"), make_up("a", n=10, loss=1.0).encode())
    c.ingest(up_topic("b"), make_up("b", n=30, loss=2.0).encode())
    c.close()
    c.open(SubRound(1, 1, 0, P))
    c.ingest(up_topic("a"), make_up("a", n=10, loss=0.5, sub=1).encode())
    assert c.sum.k == 1 and c.sub_devices == {"a"}
    assert (c.totals.n, c.totals.k) == (40, 3)
    assert c.totals.loss == pytest.approx((10 * 1.0 + 30 * 2.0 + 10 * 0.5) / 50)
    c.open(SubRound(2, 0, 1, P))
    assert (c.totals.n, c.totals.k, c.totals.bytes_up) == (0, 0, 0)
