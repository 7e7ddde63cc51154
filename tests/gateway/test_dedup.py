"""Claims of gateway workers (``gateway.dedup``) against the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import time

import pytest

from gateway.dedup import AHEAD, DUPLICATE, HELD, LocalDedup, RedisDedup, check_dedup_url, triage
from gateway.settings import GatewaySettings
from gateway.state_db import StateError

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_first_claim_wins_while_its_owner_lives_then_is_taken_over(redis_fleet: str) -> None:
    w0 = RedisDedup(REDIS_URL, redis_fleet, "gw0", "w0", lease=0.6)
    w1 = RedisDedup(REDIS_URL, redis_fleet, "gw0", "w1", lease=0.6)
    try:
        assert w0.claim([(1, 0, "d1"), (1, 0, "d2"), (1, 1, "d1")]) == [True, True, True]
        assert w1.claim([(1, 0, "d1"), (1, 0, "d3"), (2, 0, "d1")]) == [False, True, True]
        assert w0.claim([(1, 0, "d1"), (1, 0, "d3")]) == [True, False]  # its own again; w1's stays w1's
        time.sleep(1.0)  # longer than the lease: renewal keeps both alive
        assert w1.claim([(1, 0, "d2")]) == [False]
        # Only committed claims of live workers count towards the close.
        assert w0.answered(1, 0) == set()
        w0.committed([(1, 0, "d1"), (1, 0, "d2")])
        w1.committed([(1, 0, "d3")])
        assert w0.answered(1, 0) == w1.answered(1, 0) == {"d1", "d2", "d3"}
        w0.close()  # gives its lease up, as an expiry would
        assert w1.answered(1, 0) == {"d3"}
        assert w1.claim([(1, 0, "d1")]) == [True]
        w1.committed([(1, 0, "d1")])
        assert w1.answered(1, 0) == {"d1", "d3"}
        # w0 back (a restart replaying its journal): d1 was taken over and is no longer its to count.
        w0 = RedisDedup(REDIS_URL, redis_fleet, "gw0", "w0", lease=0.6)
        assert w0.claim([(1, 0, "d1"), (1, 0, "d2")]) == [False, True]
    finally:
        w0.close()
        w1.close()


def test_a_killed_workers_lease_expires(redis_fleet: str) -> None:
    w0 = RedisDedup(REDIS_URL, redis_fleet, "gw0", "w0", lease=0.6)
    w1 = RedisDedup(REDIS_URL, redis_fleet, "gw0", "w1", lease=0.6)
    try:
        assert w0.claim([(1, 0, "d1")]) == [True]
        w0._stop.set()  # renewal stops as with kill -9 (the lease key is left to expire)
        w0._thread.join(1)
        assert w1.claim([(1, 0, "d1")]) == [False]
        time.sleep(0.8)
        assert w1.claim([(1, 0, "d1")]) == [True]
    finally:
        w1.close()


def test_local_dedup_leaves_everything_to_the_journal() -> None:
    assert check_dedup_url("local") == "local"
    assert LocalDedup().claim([(1, 0, "d1")] * 2) == [True, True] and LocalDedup().answered(1, 0) is None


def test_an_unreachable_store_is_a_clear_error_at_start() -> None:
    with pytest.raises(StateError, match=r"dedup store redis://127.0.0.1:9/0 unreachable"):
        RedisDedup("redis://127.0.0.1:9/0", "f", "gw0", "w0")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"share_group": "g"}, "needs --worker-id"),
        ({"share_group": "g", "worker_id": "w0"}, "shared --dedup store"),
        ({"dedup": "http://x"}, "must be `local` or redis://"),
        ({"parent": "ftp://x"}, "parent URL"),
        ({"worker_id": "bad id"}, "id"),
    ],
)
def test_worker_settings_refuse_what_would_double_count(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatewaySettings(id="gw0", token="t", **flags)


def test_a_worker_posts_under_its_qualified_id_and_a_child_to_its_parent() -> None:
    worker = GatewaySettings(id="gw0", token="t", worker_id="w1", share_group="g", dedup=REDIS_URL)
    assert worker.cloud_id == "gw0-w1" and worker.upstream == "http://127.0.0.1:8000"
    child = GatewaySettings(id="gw0", token="t", parent="http://region:8100/")
    assert child.cloud_id == "gw0" and child.upstream == "http://region:8100"


def test_triage_tells_a_worker_what_to_answer(redis_fleet: str) -> None:
    w0 = RedisDedup(REDIS_URL, redis_fleet, "gw0", "w0", lease=0.6)
    w1 = RedisDedup(REDIS_URL, redis_fleet, "gw0", "w1", lease=0.6)
    try:
        assert w0.claim([(1, 0, "d1")]) == [True]
        w0.committed([(1, 0, "d1")])
        judged = [
            None,
            ("accepted", "", (1, 0, "d1")),  # w0's: w0 answers it
            ("accepted", "", (1, 0, "d2")),  # free: w1's now
            ("rejected", "future_round", (2, 0, "d3")),  # w1 has not opened round 2 yet
            ("late", "late", (1, 0, "d1")),  # w1 closed round 1, w0 counted d1
            ("late", "late", (1, 0, "d4")),  # nobody counted it: late indeed
            ("rejected", "schema", (1, 0, "d5")),
        ]
        assert triage(w1, judged) == [None, HELD, None, AHEAD, DUPLICATE, None, None]
        assert w1.counted([(1, 0, "d1"), (1, 0, "d2")]) == [True, False]  # d2 claimed, not committed yet
    finally:
        w0.close()
        w1.close()
