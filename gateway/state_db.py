"""The gateway's state database: one SQLite file in ``state_dir`` holding the round journal and the cloud outbox.

WAL mode with ``synchronous=FULL``: a commit returns only once the write-ahead log is on disk, so what was committed
survives ``kill -9`` and a power cut (about 0.3 ms per commit on an SSD, a few ms on an SD card). Each part (journal,
outbox) opens its own connection; SQLite serializes their writes and ``busy_timeout`` makes a writer wait its turn.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000


class StateError(RuntimeError):
    """The state database could not be read or written (disk full, permissions, a damaged file)."""


def state_path(state_dir: Path, gw: str) -> Path:
    return Path(state_dir) / f"{gw}-state.sqlite3"


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL, full sync and ``schema`` applied."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StateError(f"{path}: SQLite refused WAL mode (got {mode!r}); is the file on a network share?")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"cannot open the gateway state {path}: {exc}") from None
    return db


@contextmanager
def transaction(db: sqlite3.Connection, write: bool, what: str) -> Iterator[sqlite3.Connection]:
    """One transaction (``BEGIN IMMEDIATE`` for writers, so a busy file waits up front); errors → ``StateError``."""
    try:
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        yield db
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(db)
        raise StateError(f"{what}: {exc}") from None
    except BaseException:
        _rollback(db)
        raise


class StatePart:
    """One part of the state database (journal, outbox, fog store): a lazily opened connection, used by one thread
    at a time. Subclasses set ``SCHEMA`` and ``WHAT`` (how errors name the part)."""

    SCHEMA = ""
    WHAT = "gateway state"

    def __init__(self, directory: Path, gw: str) -> None:
        self.path = state_path(Path(directory), gw)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                self._db = connect(self.path, self.SCHEMA)
            with transaction(self._db, write, f"{self.WHAT} {self.path}") as db:
                yield db


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection is unusable anyway; the error that got us here is what gets reported


__all__ = ["StateError", "StatePart", "connect", "state_path", "transaction"]
