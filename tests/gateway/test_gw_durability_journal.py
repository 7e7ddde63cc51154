"""The journal's durability: WAL with full sync, every commit survives ``kill -9`` of the writer, and an update the
journal could not commit gets neither an ack nor a PUBACK (the broker redelivers it to the next session)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gateway_peers import WAIT, devices, make_task, make_up

from flcore.endpoints import parse_broker_url
from gateway import state_db
from gateway.journal import Journal
from gateway.node import GatewayNode
from iotfl.broker import Broker

REPO = Path(__file__).resolve().parents[2]


def test_state_database_runs_wal_with_full_sync(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "gw0")
    journal.begin(1, 0)
    db = state_db.connect(journal.path, "")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: the WAL is synced on every commit
    db.close()
    journal.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, "tests/gateway")
    from gateway_peers import make_up
    from gateway.journal import Journal
    journal = Journal(Path(sys.argv[1]), "gw0")
    journal.begin(1, 0)
    for i in range(100_000):
        journal.update(make_up(f"d{i}"), f"t/d{i}", b"x" * 300)
        print(i, flush=True)  # only after the commit returned
    """
)


def test_every_committed_update_survives_kill_9(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    last = -1
    end = time.monotonic() + WAIT
    while last < 300 and time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        last = int(line)
    proc.kill()  # SIGKILL while it keeps committing
    proc.wait(WAIT)
    assert last >= 300, "the writer did not get going"
    replay = Journal(tmp_path, "gw0").begin(1, 0)
    assert replay is not None
    journaled = [topic for topic, _ in replay.ups[0]]
    assert journaled[: last + 1] == [f"t/d{i}" for i in range(last + 1)]  # everything it reported, in order


def test_update_the_journal_cannot_commit_is_neither_acked_nor_pubacked(
    mosquitto: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_db, "BUSY_TIMEOUT_MS", 200)
    journal = Journal(tmp_path, "gw0")
    journal.begin(1, 0)
    blocker = sqlite3.connect(journal.path, isolation_level=None)
    address = parse_broker_url(mosquitto.url)
    with devices(mosquitto.url, "a") as (a,):
        node = GatewayNode("gw0", address, journal=journal)
        node.open_sub_round(make_task())
        assert node.start(WAIT)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database: commits fail after busy_timeout
        a.send(make_up("a", seq=1))
        assert a.no_ack(within=1.5)
        assert node.counters["journal_error"] == 1 and node.ups.withheld == 1
        assert node.collector.sum is not None and node.collector.sum.k == 0  # nothing folded without the commit
        node.stop()
        blocker.execute("ROLLBACK")
        # The broker never got a PUBACK: it hands the update to the gateway's next session (same client id).
        again = GatewayNode("gw0", address, journal=journal)
        again.open_sub_round(make_task())
        assert again.start(WAIT)
        try:
            ack = a.ack()
            assert (ack.status, ack.seq) == ("accepted", 1)
            assert again.collector.sum is not None and again.collector.sum.k == 1
        finally:
            again.stop()
    blocker.close()
    journal.close()
    replay = Journal(tmp_path, "gw0").begin(1, 0)
    assert replay is not None and [t for t, _ in replay.ups[0]] == ["iotfl/default/gw/gw0/up/a"]
