"""Group commit: a batch of updates is judged as if ingested one by one, journaled in one transaction before any is
folded or acked, and a batch the journal cannot commit changes nothing and is neither acked nor PUBACKed."""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from gateway_peers import WAIT, P, devices, make_task, make_up

from flcore.endpoints import parse_broker_url
from flcore.topics import GatewayTopics
from gateway import state_db
from gateway.collector import Collector
from gateway.journal import Journal
from gateway.mqtt import TopicFilter
from gateway.node import GatewayNode
from gateway.verdicts import Accepted, SubRound
from iotfl.broker import Broker

TOPICS = GatewayTopics("default", "gw0")


def collector() -> Collector:
    c = Collector(TOPICS)
    c.open(SubRound(round=1, sub=0, base=0, params=P))
    return c


def batch() -> list[tuple[str, bytes]]:
    """Five fresh updates, a second copy of one of them inside the batch, and one for a future round."""
    ups = [make_up(f"d{i}", n=10 + i, seq=i) for i in range(5)]
    messages = [(TOPICS.up(u.dev), u.encode()) for u in ups]
    messages.insert(3, messages[1])  # a re-send inside the same batch
    messages.append((TOPICS.up("x"), make_up("x", round=2).encode()))  # future_round
    return messages


def test_a_batch_is_judged_like_one_message_after_another_and_committed_once() -> None:
    messages = batch()
    one_by_one = collector()
    expected = [one_by_one.ingest(topic, payload) for topic, payload in messages]
    commits: list[list[Accepted]] = []
    grouped = collector()
    verdicts = grouped.ingest_batch(messages, commits.append)
    assert [(v.dev, v.ack) for v in verdicts if v] == [(v.dev, v.ack) for v in expected if v]
    assert [v.ack.status for v in verdicts if v] == ["accepted"] * 3 + ["duplicate"] + ["accepted"] * 2 + ["rejected"]
    assert len(commits) == 1 and [a.update.dev for a in commits[0]] == ["d0", "d1", "d2", "d3", "d4"]
    assert [a.payload for a in commits[0]] == [payload for _, payload in messages[:3] + messages[4:6]]
    assert grouped.sum is not None and one_by_one.sum is not None
    assert grouped.sum.total.tobytes() == one_by_one.sum.total.tobytes()
    assert (grouped.sum.n, grouped.sum.k, grouped.counters) == (one_by_one.sum.n, 5, one_by_one.counters)
    assert grouped.totals is not None and one_by_one.totals is not None
    assert grouped.totals.bytes_up == one_by_one.totals.bytes_up == sum(len(p) for _, p in messages)


def test_a_batch_whose_commit_fails_leaves_the_collector_as_it_was() -> None:
    c = collector()

    def fail(_accepted: list[Accepted]) -> None:
        raise state_db.StateError("disk full")

    with pytest.raises(state_db.StateError):
        c.ingest_batch(batch(), fail)
    assert c.sum is not None and (c.sum.k, c.sum.n) == (0, 0) and not c.counters
    assert c.totals is not None and c.totals.bytes_up == 0
    # Redelivered, the same messages are judged afresh: nothing was remembered from the failed batch.
    assert [v.ack.status for v in c.ingest_batch(batch()) if v].count("accepted") == 5


def test_journal_commits_a_batch_in_one_transaction_in_arrival_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "gw0")
    journal.begin(1, 0)
    ups = [make_up(f"d{i}", seq=100 + i) for i in (3, 1, 2)]
    journal.updates([Accepted(u, TOPICS.up(u.dev), u.encode()) for u in ups])
    replay = Journal(tmp_path, "gw0").begin(1, 0)
    assert replay is not None and [t for t, _ in replay.ups[0]] == [TOPICS.up(d) for d in ("d3", "d1", "d2")]
    assert journal.seqs() == {"d3": 103, "d1": 101, "d2": 102}
    journal.close()


@pytest.mark.parametrize(
    ("pattern", "topic"),
    list(
        itertools.product(
            ["#", "+", "a/#", "a/+", "a/+/c", "+/b/#", "$SYS/#", "$SYS/+", "a/b", "+/+", "/+", "+/", "a/b/#"],
            ["a", "a/b", "a/b/c", "a/x/c", "$SYS/x", "$SYS", "/a", "a/", "", "x/b/c/d", "b", "a/b/c/d"],
        )
    ),
)
def test_topic_filter_matches_like_paho(pattern: str, topic: str) -> None:
    assert TopicFilter(pattern).matches(topic.split("/")) == paho.topic_matches_sub(pattern, topic)


def test_a_burst_is_acked_and_pubacked_once_each_after_its_commit(mosquitto: Broker, tmp_path: Path) -> None:
    journal = Journal(tmp_path, "gw0")
    journal.begin(1, 0)
    ids = [f"d{i}" for i in range(40)]
    with devices(mosquitto.url, *ids) as fleet:
        node = GatewayNode("gw0", parse_broker_url(mosquitto.url), journal=journal)
        node.open_sub_round(make_task())
        assert node.start(WAIT)
        try:
            infos = [d.client.publish(TOPICS.up(d.dev), make_up(d.dev, seq=1).encode(), qos=1) for d in fleet]
            for info in infos:
                info.wait_for_publish(WAIT)
            assert all(d.ack().status == "accepted" for d in fleet)
            assert node.collector.sum is not None and node.collector.sum.k == len(ids)
            replay = Journal(tmp_path, "gw0").begin(1, 0)
            assert replay is not None and sorted(t for t, _ in replay.ups[0]) == sorted(TOPICS.up(d) for d in ids)
            assert node.ups.pubacked == len(ids) and node.ups.withheld == 0
        finally:
            node.stop()
    journal.close()


def test_a_burst_the_journal_cannot_commit_gets_no_ack_and_no_puback(
    mosquitto: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_db, "BUSY_TIMEOUT_MS", 200)
    journal = Journal(tmp_path, "gw0")
    journal.begin(1, 0)
    blocker = sqlite3.connect(journal.path, isolation_level=None)
    ids = [f"d{i}" for i in range(12)]
    with devices(mosquitto.url, *ids) as fleet:
        node = GatewayNode("gw0", parse_broker_url(mosquitto.url), journal=journal)
        node.open_sub_round(make_task())
        assert node.start(WAIT)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            for d in fleet:
                d.client.publish(TOPICS.up(d.dev), make_up(d.dev, seq=1).encode(), qos=1)
            deadline = time.monotonic() + WAIT  # each failed commit waits out the 0.2 s busy timeout
            while node.ups.withheld < len(ids) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert node.ups.withheld == len(ids) and node.ups.pubacked == 0
            assert all(d.no_ack(within=0.1) for d in fleet)
            assert node.collector.sum is not None and node.collector.sum.k == 0
            assert 1 <= node.counters["journal_error"] <= len(ids) and node.counters["accepted"] == 0
        finally:
            node.stop()
            blocker.execute("ROLLBACK")
            blocker.close()
    journal.close()
