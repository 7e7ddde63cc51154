"""Robust aggregation at the gateway: the sub-round's sum carries the rule's mean, rebuilt the same from the journal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gateway_peers import CHUNK, P, make_up
from pydantic import ValidationError

from flcore.fedbuff import staleness_weight
from flcore.quantize import dequantize
from flcore.topics import GatewayTopics
from gateway.collector import Collector
from gateway.journal import Journal
from gateway.settings import GatewaySettings
from gateway.verdicts import SubRound

TOPICS = GatewayTopics("default", "gw0")
HONEST = [f"d{i}" for i in range(6)]


def topic(dev: str) -> str:
    return TOPICS.up(dev)


def payloads() -> list[tuple[str, bytes]]:
    """Six honest updates and one ×100 attacker claiming a huge n."""
    ups = [make_up(dev, round=3, base=2) for dev in HONEST]
    ups.append(make_up("evil", round=3, base=2, n=1000, delta=100 * ups[0].delta()))
    return [(topic(up.dev), up.encode()) for up in ups]


def collect(rule: str, items: list[tuple[str, bytes]], journaled: bool = False) -> Collector:
    c = Collector(TOPICS, aggregation=rule)
    c.open(SubRound(round=3, sub=0, base=2, params=P))
    for t, payload in items:
        verdict = c.ingest(t, payload, journaled=journaled)
        assert verdict is not None and verdict.ack.status == "accepted"
    return c


@pytest.mark.parametrize("rule", ["median", "trimmed-mean", "krum", "clip"])
def test_a_robust_rule_bounds_the_attacker_and_keeps_the_counts(rule: str) -> None:
    honest = np.stack([make_up(dev, round=3, base=2).delta() for dev in HONEST]).astype(np.float64)
    c = collect(rule, payloads())
    assert c.rows is not None and c.rows.dtypes() == {np.dtype(np.int8)} and len(c.rows) == 7
    total = c.close()
    assert (total.k, total.n) == (7, 6 * 10 + 1000)  # every accepted update still counts in k and n
    mean = total.total / total.n
    fedavg = collect("fedavg", payloads()).close()
    attacked = np.linalg.norm(fedavg.total / fedavg.n - honest.mean(axis=0))
    assert attacked > 50 * np.linalg.norm(honest.mean(axis=0))
    assert np.linalg.norm(mean - honest.mean(axis=0)) < np.linalg.norm(honest.mean(axis=0)) + honest.std(0).mean()
    if rule == "median":
        assert np.allclose(mean, np.median(np.vstack([honest, 100 * honest[:1]]), axis=0), atol=1e-6)
    assert c.rows is None  # released at close


def test_journal_replay_rebuilds_the_same_robust_sum(tmp_path: Path) -> None:
    items = payloads()
    journal = Journal(tmp_path, "gw0")
    journal.begin(3, 2, "m")
    c = Collector(TOPICS, aggregation="trimmed-mean")
    c.open(SubRound(round=3, sub=0, base=2, params=P))
    for t, payload in items:
        c.ingest(t, payload, before_accept=lambda up, t=t, p=payload: journal.update(up, t, p, into_sub=0))
    first = c.close()
    journal.close()
    replay = Journal(tmp_path, "gw0").begin(3, 2, "m")
    assert replay is not None
    again = collect("trimmed-mean", replay.ups[0], journaled=True).close()
    assert np.array_equal(first.total, again.total) and (first.n, first.k) == (again.n, again.k)


def test_a_stale_update_joins_the_rows_with_its_staleness_weight() -> None:
    c = Collector(TOPICS, mode="async", aggregation="median")
    c.open(SubRound(round=3, sub=0, base=2, params=P))
    stale = make_up("d9", round=2, base=1)
    assert c.ingest(topic("d9"), stale.encode()).ack.status == "accepted"  # type: ignore[union-attr]
    total = c.close()
    expected = staleness_weight(1) * dequantize(stale.q, stale.scales, CHUNK)
    assert np.allclose(total.total / total.n, expected, atol=1e-7)


def test_fedavg_keeps_no_rows() -> None:
    c = collect("fedavg", payloads()[:2])
    assert c.rows is None


def test_settings_reject_unknown_rules_and_bad_parameters() -> None:
    s = GatewaySettings(id="gw0", token="t", aggregation="krum", krum_f=0.3)
    assert s.rule_params.krum_f == 0.3
    with pytest.raises(ValidationError, match="unknown aggregation rule 'avg'"):
        GatewaySettings(id="gw0", token="t", aggregation="avg")
    with pytest.raises(ValidationError, match="trim must be a fraction"):
        GatewaySettings(id="gw0", token="t", trim=0.7)
