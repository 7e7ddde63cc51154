"""The collector takes every accepted update encoding (int8, int4, topk by default; f32 when allowed), folds the
dequantized delta, and rejects an encoding it does not take, or a malformed one, with a reason."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from gateway_peers import CHUNK, P
from pydantic import ValidationError

from flcore.encodings import ACCEPTED_BY_DEFAULT, ENCODINGS, F32, INT4, INT8, TOPK, encode
from flcore.messages import Up
from flcore.topics import GatewayTopics
from gateway.collector import Collector
from gateway.settings import GatewaySettings
from gateway.verdicts import SubRound

TOPICS = GatewayTopics("default", "gw0")


def topic(dev: str) -> str:
    return TOPICS.up(dev)


def update(dev: str, enc: str, n: int = 10, seed: int = 0) -> Up:
    delta = np.random.default_rng(seed).normal(0, 0.1, P).astype(np.float32)
    body, _ = encode(delta, enc, CHUNK, 0.25)
    return Up.of(body, dev, 3, 2, n, 0.5, 1)


def collector(**kwargs: object) -> Collector:
    c = Collector(TOPICS, **kwargs)  # type: ignore[arg-type]
    c.open(SubRound(round=3, sub=0, base=2, params=P))
    return c


def test_each_default_encoding_is_accepted_and_folded_as_its_dequantized_delta() -> None:
    c = collector()
    ups = [update(f"d{i}", enc, n=5 + i, seed=i) for i, enc in enumerate(ACCEPTED_BY_DEFAULT)]
    for up in ups:
        verdict = c.ingest(topic(up.dev), up.encode())
        assert verdict is not None and (verdict.ack.status, verdict.ack.reason) == ("accepted", "")
        assert verdict.update is not None and verdict.update.enc == up.enc
    assert c.sum is not None and (c.sum.k, c.sum.n) == (3, 5 + 6 + 7)
    expected = sum(up.n * up.delta().astype(np.float64) for up in ups)
    np.testing.assert_allclose(c.sum.total, expected, rtol=1e-6)
    assert np.count_nonzero(ups[2].delta()) == 6  # topk kept ceil(0.25 · 23) values
    assert c.counters == {"accepted": 3}


@pytest.mark.parametrize(
    ("accepted", "enc", "status"),
    [
        (ACCEPTED_BY_DEFAULT, F32, "rejected"),  # the benchmarks' reference is opt-in
        ((*ACCEPTED_BY_DEFAULT, F32), F32, "accepted"),
        ((INT8,), INT4, "rejected"),
        ((INT8,), TOPK, "rejected"),
        ((INT4,), INT8, "rejected"),
        ((INT4,), INT4, "accepted"),
    ],
)
def test_a_gateway_restricts_the_encodings_it_takes(accepted: tuple[str, ...], enc: str, status: str) -> None:
    c = collector(encodings=accepted)
    verdict = c.ingest(topic("d1"), update("d1", enc).encode())
    assert verdict is not None and (verdict.ack.status, verdict.ack.round, verdict.ack.seq) == (status, 3, 1)
    assert c.sum is not None and c.sum.k == (status == "accepted")
    if status == "rejected":
        assert verdict.ack.reason == "enc" and c.counters == {"enc": 1}
        # a refused encoding does not use up the device's slot: the same update in int8 is taken where allowed
        if INT8 in accepted:
            again = c.ingest(topic("d1"), update("d1", INT8).encode())
            assert again is not None and again.ack.status == "accepted"


@pytest.mark.parametrize(
    ("enc", "change", "reason"),
    [
        (INT8, {"enc": "int2"}, "enc"),
        (INT8, {"enc": 1}, "schema"),
        (INT4, {"q": bytes([0x88]) * ((P + 1) // 2)}, "schema"),
        (INT4, {"p": P + 1}, "length"),
        (TOPK, {"idx": np.array([5, 3, 1, 0, 2, 4], dtype="<u4").tobytes()}, "schema"),
        (TOPK, {"idx": None}, "schema"),
        (F32, {"q": np.full(P, np.inf, dtype="<f4").tobytes()}, "scale"),
    ],
)
def test_a_malformed_encoding_is_rejected_and_changes_nothing(enc: str, change: dict, reason: str) -> None:
    c = collector(encodings=ENCODINGS)
    obj = msgpack.unpackb(update("d1", enc).encode())
    for key, value in change.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    verdict = c.ingest(topic("d1"), msgpack.packb(obj, use_bin_type=True))
    assert verdict is not None and (verdict.ack.status, verdict.ack.reason) == ("rejected", reason)
    assert c.sum is not None and c.sum.k == 0 and not c.sum.total.any()


def test_a_robust_rule_takes_mixed_encodings() -> None:
    c = collector(aggregation="median", encodings=ENCODINGS)
    ups = [update(f"d{i}", enc, seed=i) for i, enc in enumerate(ENCODINGS)]
    for up in ups:
        verdict = c.ingest(topic(up.dev), up.encode())
        assert verdict is not None and verdict.ack.status == "accepted"
    total = c.close()
    median = np.median(np.stack([up.delta().astype(np.float64) for up in ups]), axis=0)
    np.testing.assert_allclose(total.total / total.n, median, rtol=1e-6, atol=1e-9)


def test_settings_accept_the_named_encoding_and_refuse_unknown_ones() -> None:
    s = GatewaySettings(id="gw0", token="t", enc="f32", accept_enc="int8, int4")
    assert s.accepted_encodings == (INT8, INT4, F32)
    assert GatewaySettings(id="gw0", token="t").accepted_encodings == ACCEPTED_BY_DEFAULT
    for bad in ({"enc": "int2"}, {"accept_enc": "int8,gzip"}, {"accept_enc": ""}, {"topk": 0.0}):
        with pytest.raises(ValidationError):
            GatewaySettings(id="gw0", token="t", **bad)  # type: ignore[arg-type]
