"""The journal of the open round, so a restarted gateway resumes it: SQLite (WAL, full sync) in ``state_dir``.

``updates()`` commits a batch of accepted updates — (round, sub, dev, seq) and the raw payload of each — in one
transaction (one fsync: group commit) before the gateway publishes their ``accepted`` acks (and before paho sends the
broker their PUBACKs). The raw int8 payloads, not the running
Σ n·delta, are what is stored: they are 4× smaller than a float32 sum rewritten on every update, and replaying them
through a fresh ``Collector`` rebuilds the sums, the dedup keys and the gateway weights exactly. ``closed()`` marks a
sub-round closed. A new round forgets the payloads of earlier rounds but keeps their (dev, sub) keys for
``REMEMBERED_ROUNDS`` rounds, so a redelivery after a restart is still answered ``duplicate``.

In async mode an update of an earlier round accepted into the open one (stale) goes to ``journal_stale``, keyed by
its own (round, sub, dev) — its dedup key — with the (round, sub) it was folded into; a replay merges it back into
that sub-round in arrival order, where the collector judges it stale again with the same discount.

``device_seq`` keeps the highest ``seq`` accepted from each device, written in the transaction that journals the
update, so a replayed (old ``seq``) signed update is still refused after a restart; it outlives the rounds.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flcore.messages import Up
from gateway.collector import REMEMBERED_ROUNDS
from gateway.state_db import StateError, connect, state_path, transaction
from gateway.verdicts import Accepted

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal_rounds (
    round INTEGER PRIMARY KEY, base INTEGER NOT NULL, model TEXT NOT NULL, opened_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS journal_updates (
    round INTEGER NOT NULL, sub INTEGER NOT NULL, dev TEXT NOT NULL, seq INTEGER NOT NULL,
    topic TEXT NOT NULL, payload BLOB, at REAL NOT NULL, PRIMARY KEY (round, sub, dev));
CREATE TABLE IF NOT EXISTS journal_closed (round INTEGER NOT NULL, sub INTEGER NOT NULL, PRIMARY KEY (round, sub));
CREATE TABLE IF NOT EXISTS journal_stale (
    round INTEGER NOT NULL, sub INTEGER NOT NULL, dev TEXT NOT NULL, seq INTEGER NOT NULL,
    into_round INTEGER NOT NULL, into_sub INTEGER NOT NULL, after INTEGER NOT NULL,
    topic TEXT NOT NULL, payload BLOB, at REAL NOT NULL, PRIMARY KEY (round, sub, dev));
CREATE TABLE IF NOT EXISTS device_seq (dev TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


@dataclass
class Replay:
    """What the journal holds for a round: accepted payloads per sub-round (in arrival order) and closed subs."""

    base: int
    ups: dict[int, list[tuple[str, bytes]]] = field(default_factory=dict)
    closed: set[int] = field(default_factory=set)


class Journal:
    """The journal of one gateway; ``begin()`` a round, then ``update()``/``closed()`` as it runs. Thread-safe."""

    def __init__(self, directory: Path, gw: str) -> None:
        self.directory = Path(directory)
        self.gw = gw
        self.round: int | None = None
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return state_path(self.directory, self.gw)

    def begin(self, round: int, base: int, model: str = "") -> Replay | None:
        """Make ``round`` the journaled one; returns what an earlier run journaled for the same (round, base, model).

        ``model`` identifies the base weights (a digest), so a cloud that restarted from scratch with the same round
        numbers does not get another model's updates replayed.
        """
        with self._transaction() as db:
            row = db.execute("SELECT base, model FROM journal_rounds WHERE round = ?", (round,)).fetchone()
            replay = None
            if row is not None and tuple(row) == (base, model):
                replay = self._load(db, round, base)
            else:
                if row is not None:
                    log.info("journal of round %d belongs to another base model; starting the round afresh", round)
                db.execute("DELETE FROM journal_updates WHERE round = ?", (round,))
                db.execute("DELETE FROM journal_closed WHERE round = ?", (round,))
                db.execute("DELETE FROM journal_stale WHERE into_round = ?", (round,))
                db.execute(
                    "INSERT OR REPLACE INTO journal_rounds VALUES (?, ?, ?, ?)", (round, base, model, time.time())
                )
            db.execute("DELETE FROM journal_rounds WHERE round != ?", (round,))
            db.execute("DELETE FROM journal_closed WHERE round != ?", (round,))
            # Earlier rounds keep only their dedup keys; rounds from "the future" belong to another cloud's numbering.
            db.execute("UPDATE journal_updates SET payload = NULL WHERE round != ? AND payload IS NOT NULL", (round,))
            db.execute("DELETE FROM journal_updates WHERE round > ? OR round <= ?", (round, round - REMEMBERED_ROUNDS))
            db.execute(
                "UPDATE journal_stale SET payload = NULL WHERE into_round != ? AND payload IS NOT NULL", (round,)
            )
            db.execute(
                "DELETE FROM journal_stale WHERE into_round > ? OR round <= ?", (round, round - REMEMBERED_ROUNDS)
            )
        self.round = round
        return replay

    def unfinished(self, before: int) -> tuple[int, int, str, Replay] | None:
        """(round, base, model, replay) of the journaled round when it is older than ``before`` and holds accepted
        updates: a stop or crash cut it short while the cloud moved on, and its updates were acknowledged."""
        with self._transaction(write=False) as db:
            row = db.execute("SELECT round, base, model FROM journal_rounds WHERE round < ?", (before,)).fetchone()
            if row is None:
                return None
            replay = self._load(db, int(row[0]), int(row[1]))
        return (int(row[0]), int(row[1]), str(row[2]), replay) if replay.ups else None

    def update(self, up: Up, topic: str, payload: bytes, into_sub: int | None = None) -> None:
        """Commit one accepted update durably (see ``updates``)."""
        self.updates([Accepted(up, topic, payload)], into_sub)

    def updates(self, accepted: Sequence[Accepted], into_sub: int | None = None) -> None:
        """Commit accepted updates durably, in one transaction (called before their ``accepted`` acks go out);
        raises ``StateError`` and then none of them is journaled.

        An update of an earlier round (async mode) is journaled as stale, folded into sub-round ``into_sub``.
        """
        if self.round is None or not accepted:
            return
        now = time.time()
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO device_seq VALUES (?, ?) ON CONFLICT (dev) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                [(a.update.dev, a.update.seq) for a in accepted],
            )
            fresh: list[tuple[object, ...]] = []  # inserted together: one statement per run of this round's updates
            for a in accepted:
                up = a.update
                if up.round == self.round:
                    fresh.append((self.round, up.sub, up.dev, up.seq, a.topic, a.payload, now))
                    continue
                self._insert_fresh(db, fresh)
                # `after` places it behind the fresh updates committed before it, so a replay keeps arrival order.
                (after,) = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM journal_updates").fetchone()
                db.execute(
                    "INSERT OR IGNORE INTO journal_stale VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        up.round,
                        up.sub,
                        up.dev,
                        up.seq,
                        self.round,
                        up.sub if into_sub is None else into_sub,
                        after,
                        a.topic,
                        a.payload,
                        now,
                    ),
                )
            self._insert_fresh(db, fresh)

    @staticmethod
    def _insert_fresh(db: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
        """Insert (and forget) the pending rows of the journaled round's updates."""
        if rows:
            db.executemany("INSERT OR IGNORE INTO journal_updates VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            rows.clear()

    def closed(self, sub: int) -> None:
        if self.round is None:
            return
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO journal_closed VALUES (?, ?)", (self.round, sub))

    def accepted(self, replayed: int | None = None) -> dict[int, set[tuple[str, int]]]:
        """The (dev, sub) keys accepted in each remembered round, the journaled one included.

        With ``replayed``, the keys whose payloads a replay of that round brings back are left out.
        """
        keys: dict[int, set[tuple[str, int]]] = {}
        skip = -1 if replayed is None else replayed
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT round, dev, sub FROM journal_updates WHERE round != ? "
                "UNION SELECT round, dev, sub FROM journal_stale WHERE into_round != ?",
                (skip, skip),
            )
            for rnd, dev, sub in rows:
                keys.setdefault(int(rnd), set()).add((str(dev), int(sub)))
        return keys

    def seqs(self) -> dict[str, int]:
        """The highest ``seq`` accepted from each device."""
        with self._transaction(write=False) as db:
            return {str(dev): int(seq) for dev, seq in db.execute("SELECT dev, seq FROM device_seq")}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @staticmethod
    def _load(db: sqlite3.Connection, round: int, base: int) -> Replay:
        replay = Replay(base)
        # Arrival order (the journal's commit order) makes the replayed float sums bit-identical to the first run's.
        rows = db.execute(
            "SELECT sub, topic, payload, rowid AS pos, 0 AS stale, 0 FROM journal_updates "
            "WHERE round = ? AND payload IS NOT NULL "
            "UNION ALL SELECT into_sub, topic, payload, after, 1, rowid FROM journal_stale "
            "WHERE into_round = ? AND payload IS NOT NULL ORDER BY 4, 5, 6",
            (round, round),
        )
        for sub, topic, payload, _pos, _stale, _order in rows:
            replay.ups.setdefault(int(sub), []).append((str(topic), bytes(payload)))
        replay.closed = {int(sub) for (sub,) in db.execute("SELECT sub FROM journal_closed WHERE round = ?", (round,))}
        return replay

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                self._db = connect(self.path, SCHEMA)
            with transaction(self._db, write, f"gateway journal {self.path}") as db:
                yield db


__all__ = ["Journal", "Replay", "StateError"]
