"""The fog node's durable record of its children's aggregates, in the gateway state database (WAL, full sync).

``accept()`` commits a child's ``agg`` — keyed by (child, round), so the insert itself decides accepted or
``duplicate`` — before the fog answers the child 200. A restarted fog rebuilds the open round's sums from the rows
folded into it (``rows``) and its idempotency sets from the keys (``keys``); rows of a round the fog never forwarded
(``unforwarded``) are summed again and queued in the outbox. Rows older than ``REMEMBERED_ROUNDS`` are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from flcore.messages import Agg
from gateway.collector import REMEMBERED_ROUNDS
from gateway.state_db import StatePart

SCHEMA = """
CREATE TABLE IF NOT EXISTS fog_children (
    child TEXT NOT NULL, round INTEGER NOT NULL, into_round INTEGER NOT NULL, into_base INTEGER NOT NULL,
    model TEXT NOT NULL, weight REAL NOT NULL, body BLOB NOT NULL, PRIMARY KEY (child, round));
"""


@dataclass(frozen=True)
class Folded:
    """A child's aggregate as accepted: the round it was folded into, with which weight."""

    child: str
    agg: Agg
    weight: float


class FogStore(StatePart):
    """The accepted child aggregates of one fog node. Thread-safe."""

    SCHEMA = SCHEMA
    WHAT = "fog store"

    def accept(self, child: str, agg: Agg, into: tuple[int, int, str], weight: float) -> bool:
        """Commit ``agg`` folded into ``into`` = (round, base, model digest); False when (child, round) is known."""
        with self._transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO fog_children VALUES (?, ?, ?, ?, ?, ?, ?)",
                (child, agg.round, *into, weight, agg.encode()),
            )
            db.execute("DELETE FROM fog_children WHERE into_round <= ?", (into[0] - REMEMBERED_ROUNDS,))
            return cur.rowcount == 1

    def keys(self) -> dict[int, set[str]]:
        """The children accepted in each remembered round."""
        found: dict[int, set[str]] = {}
        with self._transaction(write=False) as db:
            for child, rnd in db.execute("SELECT child, round FROM fog_children"):
                found.setdefault(int(rnd), set()).add(str(child))
        return found

    def rows(self, into_round: int, base: int, model: str) -> list[Folded]:
        """The aggregates folded into (``into_round``, ``base``, ``model``), in commit order."""
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT child, body, weight FROM fog_children WHERE into_round = ? AND into_base = ? AND model = ?"
                " ORDER BY rowid",
                (into_round, base, model),
            ).fetchall()
        return [Folded(str(c), Agg.decode(bytes(b)), float(w)) for c, b, w in rows]

    def rounds(self) -> list[tuple[int, int, str]]:
        """Every (into_round, base, model) that holds aggregates, oldest first."""
        with self._transaction(write=False) as db:
            found = db.execute("SELECT DISTINCT into_round, into_base, model FROM fog_children ORDER BY into_round")
            return [(int(r), int(b), str(m)) for r, b, m in found]


__all__ = ["FogStore", "Folded"]
