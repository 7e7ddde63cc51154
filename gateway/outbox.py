"""The durable outbox of ``agg`` posts (store-and-forward to the cloud), in the gateway's state database.

A round's aggregate is committed here before the first attempt to post it, and stays ``pending`` until the cloud
gives a final answer (``gateway.forwarder`` decides which answers are final). A finished row keeps its round, result
and counts (its body is dropped) so a restarted gateway knows the round was forwarded and does not run it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flcore.messages import Agg
from gateway.state_db import StatePart

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    round INTEGER PRIMARY KEY, base INTEGER NOT NULL, model TEXT NOT NULL, body BLOB,
    k INTEGER NOT NULL, n INTEGER NOT NULL, state TEXT NOT NULL, result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, queued_at REAL NOT NULL, finished_at REAL);
"""
PENDING = "pending"
DONE = "done"
# Finished rows kept (without their bodies) to recognise rounds already forwarded after a restart.
KEEP_FINISHED = 32


@dataclass(frozen=True)
class Entry:
    """One pending post: the encoded ``agg`` body and what the logs need about it."""

    round: int
    base: int
    body: bytes
    k: int
    n: int
    attempts: int
    queued_at: float


class Outbox(StatePart):
    """Pending and recently finished ``agg`` posts of one gateway, oldest round first. Thread-safe."""

    SCHEMA = SCHEMA
    WHAT = "gateway outbox"

    def put(self, agg: Agg, model: str = "") -> bool:
        """Commit ``agg`` as pending; False when this (round, base, model) is already there (pending or finished).

        A row for the same round but another base or model (a cloud restarted from scratch) is replaced.
        """
        with self._transaction() as db:
            row = db.execute("SELECT base, model FROM outbox WHERE round = ?", (agg.round,)).fetchone()
            if row is not None and (int(row[0]), str(row[1])) == (agg.base, model):
                return False
            db.execute(
                "INSERT OR REPLACE INTO outbox (round, base, model, body, k, n, state, queued_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (agg.round, agg.base, model, agg.encode(), agg.k, agg.n, PENDING, time.time()),
            )
            return True

    def next(self) -> Entry | None:
        """The oldest pending post (posts go out in round order)."""
        with self._transaction(write=False) as db:
            row = db.execute(
                "SELECT round, base, body, k, n, attempts, queued_at FROM outbox"
                " WHERE state = ? ORDER BY round LIMIT 1",
                (PENDING,),
            ).fetchone()
        if row is None:
            return None
        rnd, base, body, k, n, attempts, queued_at = row
        return Entry(int(rnd), int(base), bytes(body), int(k), int(n), int(attempts), float(queued_at))

    def attempted(self, round: int, error: str) -> int:
        """Count a failed attempt; returns the attempts so far."""
        with self._transaction() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE round = ?", (error, round))
            row = db.execute("SELECT attempts FROM outbox WHERE round = ?", (round,)).fetchone()
        return int(row[0]) if row else 0

    def finish(self, round: int, result: str) -> None:
        """The cloud gave a final answer (``accepted``, ``duplicate``, ``late``, …): the post leaves the queue."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET state = ?, result = ?, body = NULL, finished_at = ? WHERE round = ?",
                (DONE, result, time.time(), round),
            )
            db.execute(
                "DELETE FROM outbox WHERE state = ? AND round NOT IN"
                " (SELECT round FROM outbox WHERE state = ? ORDER BY round DESC LIMIT ?)",
                (DONE, DONE, KEEP_FINISHED),
            )

    def depth(self) -> int:
        """Posts still waiting for the cloud."""
        with self._transaction(write=False) as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox WHERE state = ?", (PENDING,)).fetchone()[0])

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds the oldest pending post has waited, or None when the outbox is empty."""
        with self._transaction(write=False) as db:
            row = db.execute("SELECT MIN(queued_at) FROM outbox WHERE state = ?", (PENDING,)).fetchone()
        return None if row[0] is None else (time.time() if now is None else now) - float(row[0])

    def state_of(self, round: int, base: int, model: str = "") -> str | None:
        """``pending``, the final result, or None: what the outbox knows of this (round, base, model)."""
        with self._transaction(write=False) as db:
            row = db.execute("SELECT base, model, state, result FROM outbox WHERE round = ?", (round,)).fetchone()
        if row is None or (int(row[0]), str(row[1])) != (base, model):
            return None
        return PENDING if row[2] == PENDING else str(row[3])


__all__ = ["DONE", "Entry", "Outbox", "PENDING"]
