"""Async mode at the collector and the journal: stale updates accepted with their weight, deduplicated, replayed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from gateway_peers import P, make_up

from flcore.fedbuff import MAX_STALENESS, staleness_weight
from flcore.topics import GatewayTopics
from gateway.collector import Collector
from gateway.journal import Journal
from gateway.verdicts import SubRound

TOPICS = GatewayTopics("default", "gw0")


def topic(dev: str) -> str:
    return f"iotfl/default/gw/gw0/up/{dev}"


def collector(mode: str, round: int = 5, sub: int = 0) -> Collector:
    c = Collector(TOPICS, mode=mode)
    c.open(SubRound(round=round, sub=sub, base=round - 1, params=P))
    return c


def delta_of(up) -> np.ndarray:  # type: ignore[no-untyped-def]
    return up.delta(np.float64)  # what the collector folds: n·q·scale exactly


def test_sync_mode_acks_an_earlier_round_late() -> None:
    c = collector("sync")
    verdict = c.ingest(topic("s"), make_up("s", round=4, base=3).encode())
    assert verdict is not None and (verdict.ack.status, verdict.ack.round) == ("late", 4) and verdict.update is None
    assert c.sum is not None and c.sum.k == 0 and c.counters == {"late": 1}


def test_async_mode_accepts_it_with_the_staleness_weight() -> None:
    c = collector("async")
    fresh = make_up("f", round=5, base=4, n=10)
    stale = make_up("s", round=3, base=2, n=30)  # two rounds behind
    assert c.ingest(topic("f"), fresh.encode()).ack.status == "accepted"  # type: ignore[union-attr]
    verdict = c.ingest(topic("s"), stale.encode())
    assert verdict is not None and (verdict.ack.status, verdict.ack.reason, verdict.ack.round) == ("accepted", "", 3)
    w = staleness_weight(2)
    assert w == pytest.approx(1 / math.sqrt(3))
    assert c.sum is not None and (c.sum.n, c.sum.k) == (40, 2)
    np.testing.assert_allclose(c.sum.total, 10 * delta_of(fresh) + w * 30 * delta_of(stale), rtol=1e-12)
    assert c.totals is not None and (c.totals.k, c.totals.n, c.totals.stale) == (2, 40, 1)
    assert c.totals.stale_weight == pytest.approx(w)
    assert c.sub_devices == {"f"}  # a stale update does not answer the open task
    assert c.counters == {"accepted": 2, "stale": 1}
    # The same device's fresh update for the open round is its own key: accepted too.
    assert c.ingest(topic("s"), make_up("s", round=5, base=4, n=30).encode()).ack.status == "accepted"  # type: ignore[union-attr]
    assert (c.totals.n, c.totals.samples) == (40, 70) and c.sub_devices == {"f", "s"}  # a device counts once in n


def test_async_dedups_per_device_round_and_sub() -> None:
    c = collector("async")
    stale = make_up("s", round=4, base=3, seq=2)
    assert c.ingest(topic("s"), stale.encode()).ack.status == "accepted"  # type: ignore[union-attr]
    again = c.ingest(topic("s"), stale.encode())
    assert again is not None and (again.ack.status, again.ack.seq) == ("duplicate", 2)
    assert c.sum is not None and c.sum.k == 1
    # A redelivery in a later round is still a duplicate (its key is remembered with round 4).
    c.close()
    c.open(SubRound(round=6, sub=0, base=5, params=P))
    assert c.ingest(topic("s"), stale.encode()).ack.status == "duplicate"  # type: ignore[union-attr]


def test_async_bounds_staleness_and_checks_the_base() -> None:
    c = collector("async", round=10)
    too_old = make_up("o", round=10 - MAX_STALENESS - 1, base=10 - MAX_STALENESS - 2)
    assert c.ingest(topic("o"), too_old.encode()).ack.status == "late"  # type: ignore[union-attr]
    oldest = make_up("p", round=10 - MAX_STALENESS, base=10 - MAX_STALENESS - 1)
    assert c.ingest(topic("p"), oldest.encode()).ack.status == "accepted"  # type: ignore[union-attr]
    wrong = c.ingest(topic("b"), make_up("b", round=9, base=9).encode())  # claims the open round's base
    assert wrong is not None and (wrong.ack.status, wrong.ack.reason) == ("rejected", "base_mismatch")
    c.close()
    assert c.ingest(topic("q"), make_up("q", round=9, base=8).encode()).ack.status == "late"  # type: ignore[union-attr]


def test_async_keeps_an_earlier_sub_of_the_open_round_late() -> None:
    c = collector("async", round=5, sub=1)
    assert c.ingest(topic("s"), make_up("s", round=5, base=4, sub=0).encode()).ack.status == "late"  # type: ignore[union-attr]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        Collector(TOPICS, mode="eventual")


def test_journal_replays_stale_updates_in_arrival_order_bit_exactly(tmp_path: Path) -> None:
    first = collector("async")
    journal = Journal(tmp_path, "gw0")
    journal.begin(5, 4, "m")
    ups = [
        make_up("a", round=5, base=4, n=7),
        make_up("s", round=4, base=3, n=13),  # stale, between two fresh ones
        make_up("b", round=5, base=4, n=11),
        make_up("a", round=3, base=2, n=5),  # the same device's older update: its own key
    ]
    for up in ups:
        payload = up.encode()

        def commit(u, payload=payload) -> None:  # type: ignore[no-untyped-def]
            journal.update(u, topic(u.dev), payload, into_sub=0)

        assert first.ingest(topic(up.dev), payload, before_accept=commit).ack.status == "accepted"  # type: ignore[union-attr]
    journal.close()

    again = Journal(tmp_path, "gw0")
    earlier = again.accepted(replayed=5)
    assert earlier == {}  # every key of round 5 and of what was folded into it comes back with the replay
    replay = again.begin(5, 4, "m")
    assert replay is not None and [t for t, _ in replay.ups[0]] == [topic(u.dev) for u in ups]
    second = collector("async")
    second.remember(5, ())
    for t, payload in replay.ups[0]:
        assert second.ingest(t, payload).ack.status == "accepted"  # type: ignore[union-attr]
    assert first.sum is not None and second.sum is not None
    assert first.sum.total.tobytes() == second.sum.total.tobytes() and (second.sum.n, second.sum.k) == (36, 4)
    # Every key is known after the restart: a redelivered stale update is a duplicate.
    assert again.accepted() == {5: {("a", 0), ("b", 0)}, 4: {("s", 0)}, 3: {("a", 0)}}
    assert second.ingest(topic("s"), ups[1].encode()).ack.status == "duplicate"  # type: ignore[union-attr]
    # The next round keeps the stale keys for dedup but no payloads to replay.
    assert again.begin(6, 5, "m2") is None
    assert again.accepted(replayed=6) == {5: {("a", 0), ("b", 0)}, 4: {("s", 0)}, 3: {("a", 0)}}
    again.close()


def test_async_parks_an_update_for_the_just_closed_round_until_the_next_opens() -> None:
    c = collector("async", round=5)
    c.close()
    up = make_up("s", round=5, base=4, n=9)
    assert c.ingest(topic("s"), up.encode()) is None  # no ack yet: the device keeps it
    assert c.ingest(topic("s"), up.encode()) is None  # its re-send is parked once
    assert c.counters == {"parked": 2}
    c.open(SubRound(round=6, sub=0, base=5, params=P))
    parked = c.take_parked()
    assert parked == [(topic("s"), up.encode())] and c.take_parked() == []
    verdict = c.ingest(*parked[0])
    assert verdict is not None and (verdict.ack.status, verdict.ack.round) == ("accepted", 5)
    assert c.totals is not None and c.totals.stale == 1


def test_a_parked_update_is_late_when_the_same_round_opens_a_later_sub() -> None:
    c = collector("async", round=5, sub=0)
    c.close()
    assert c.ingest(topic("s"), make_up("s", round=5, base=4, sub=0).encode()) is None
    c.open(SubRound(round=5, sub=1, base=4, params=P))
    (parked,) = c.take_parked()
    assert c.ingest(*parked).ack.status == "late"  # type: ignore[union-attr]


def test_sync_never_parks() -> None:
    c = collector("sync", round=5)
    c.close()
    assert c.ingest(topic("s"), make_up("s", round=5, base=4).encode()).ack.status == "late"  # type: ignore[union-attr]
    assert c.take_parked() == []
