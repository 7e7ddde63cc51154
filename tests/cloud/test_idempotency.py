"""Idempotency per (gw, round) under concurrency: threads on one cloud, and two clouds (workers) on one database."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cloud_client import Cloud
from sqlalchemy.exc import IntegrityError

from cloud.storage import AggregateRow, RoundRow, Storage, database_url


def test_simultaneous_repeats_are_accepted_once(cloud: Cloud) -> None:
    cloud.checkin("gw0", "gw1")  # round 1 stays open while gw1 is missing
    agg = cloud.agg("gw0", 1, n=7)
    with ThreadPoolExecutor(8) as pool:
        answers = [r.json() for r in pool.map(lambda _: cloud.post(agg), range(8))]
    assert sorted(a["accepted"] for a in answers) == [False] * 7 + [True]
    assert all(a["duplicate"] for a in answers if not a["accepted"])
    assert cloud.round(1)["n"] == 7


def test_two_workers_on_one_database_accept_a_pair_once(start_cloud) -> None:
    a: Cloud = start_cloud()
    b: Cloud = start_cloud()  # a second process-like instance: its own lock, engine and deadline task
    for c in (a, b):
        c.checkin("gw0", "gw1")
    agg = a.agg("gw0", 1, n=5)
    with ThreadPoolExecutor(6) as pool:
        answers = [r.json() for r in pool.map(lambda i: (a, b)[i % 2].post(agg), range(6))]
    assert sum(x["accepted"] for x in answers) == 1 and sum(x["duplicate"] for x in answers) == 5
    assert a.round(1) == b.round(1) and b.round(1)["n"] == 5
    # the other gateway's aggregate, posted to the other worker, closes the round exactly once
    assert b.post(b.agg("gw1", 1, n=3)).json()["accepted"] is True
    a.wait_for(lambda: a.round(1)["state"] == "closed")
    assert a.round(1)["n"] == 8 and a.model()[0] == b.model()[0] == 1
    assert [h["round"] for h in a.status()["history"]] == [1]


def test_the_unique_constraint_holds_below_the_service(db_url: str, dataset) -> None:
    first, second = Storage(db_url), Storage(db_url)
    try:
        with first.transaction(write=True) as s:
            s.add(RoundRow(round=1, base=0, state="open", opened_at=time.time(), deadline=None))

        def row() -> AggregateRow:
            return AggregateRow(
                round=1,
                gw="gw0",
                base=0,
                n=1,
                k=1,
                loss=0.0,
                bytes_up=0,
                devices=[],
                total=b"",
                received_at=time.time(),
                counted_in=1,
            )

        with first.transaction(write=True) as s:
            s.add(row())
        with pytest.raises(IntegrityError), second.transaction(write=True) as s:
            s.add(row())
    finally:
        first.close()
        second.close()


def test_postgres_urls_use_psycopg() -> None:
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgres://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
