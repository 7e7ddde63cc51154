"""Width-sliced updates at the gateway's collector: checked against the round's layers, folded per parameter with
their cover, and refused under a robust rule (which compares whole updates)."""

from __future__ import annotations

import numpy as np
from gateway_peers import CHUNK, SPEC

from flcore.encodings import encode
from flcore.hetero import indices
from flcore.messages import Ack, Up
from flcore.topics import GatewayTopics
from gateway.collector import Collector
from gateway.verdicts import SubRound

TOPICS = GatewayTopics("default", "gw0")


def _collector(aggregation: str = "fedavg") -> Collector:
    c = Collector(TOPICS, max_samples=1000, aggregation=aggregation)
    c.open(SubRound(round=3, sub=0, base=2, params=SPEC.param_count, layers=SPEC.layers))
    return c


def _up(dev: str, value: float, n: int, width: float = 1.0) -> bytes:
    size = SPEC.param_count if width == 1.0 else len(indices(SPEC, width))
    body, _ = encode(np.full(size, value, dtype=np.float32), "int8", CHUNK, None, None)
    return Up.of(body, dev, 3, 2, n, 0.5, 1, width=width).encode()


def _ack(c: Collector, dev: str, payload: bytes) -> Ack:
    verdict = c.ingest(TOPICS.up(dev), payload)
    assert verdict is not None
    return verdict.ack


def test_whole_and_sliced_updates_average_per_parameter() -> None:
    c = _collector()
    assert _ack(c, "a", _up("a", 1.0, 3)).status == "accepted"
    assert _ack(c, "b", _up("b", 5.0, 1, width=0.5)).status == "accepted"
    acc = c.close()
    idx = indices(SPEC, 0.5)
    inside = np.zeros(SPEC.param_count, dtype=bool)
    inside[idx] = True
    mean = acc.mean()
    np.testing.assert_allclose(mean[inside], 2.0, rtol=1e-2)  # (3·1 + 1·5) / 4, int8-rounded
    np.testing.assert_allclose(mean[~inside], 1.0, rtol=1e-2)
    assert (acc.k, acc.n) == (2, 4) and acc.cover is not None and acc.cover.max() == 4 and acc.cover.min() == 3


def test_a_slice_that_does_not_fit_the_rounds_model_is_rejected_length() -> None:
    c = _collector()
    body, _ = encode(np.ones(SPEC.param_count, dtype=np.float32), "int8", CHUNK, None, None)
    wrong = Up.of(body, "a", 3, 2, 4, 0.5, 1, width=0.5).encode()  # the whole model's values, labelled half width
    ack = _ack(c, "a", wrong)
    assert (ack.status, ack.reason) == ("rejected", "length")
    assert c.close().k == 0


def test_a_robust_rule_refuses_sliced_updates() -> None:
    c = _collector("median")
    ack = _ack(c, "b", _up("b", 5.0, 1, width=0.5))
    assert (ack.status, ack.reason) == ("rejected", "width")
    assert _ack(c, "a", _up("a", 1.0, 3)).status == "accepted"
