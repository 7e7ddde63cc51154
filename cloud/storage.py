"""The cloud's tables (model versions, rounds, aggregates, gateways, devices) and the queries over them.

Every function takes an open ``Session``; the round service decides the transaction boundaries. The engine comes
from a URL: ``sqlite:///FILE`` (WAL journal, one file) or ``postgresql+psycopg://…`` (``postgresql://`` and
``postgres://`` are mapped to psycopg).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from cloud import migrate
from cloud.errors import CloudError

log = logging.getLogger(__name__)

OPEN, CLOSED = "open", "closed"
# pg_advisory_xact_lock key every writing transaction takes on PostgreSQL (one per database, any value of our own).
ROUND_LOCK_KEY = 0x10F1_0000


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    """What the database was created for (model layers, dataset, fleet), checked when the cloud restarts."""

    __tablename__ = "iotfl_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class ModelRow(Base):
    """One global model version (float32 weights) and its held-out evaluation."""

    __tablename__ = "iotfl_models"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    accuracy: Mapped[float] = mapped_column(Double)
    loss: Mapped[float] = mapped_column(Double)
    created_at: Mapped[float] = mapped_column(Double)
    # The server optimizer's state after producing this version (flcore.server_opt); None for plain FedAvg.
    opt_state: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class RoundRow(Base):
    """A global round; ``deadline`` is None while round 1 waits for ``min_gateways`` check-ins."""

    __tablename__ = "iotfl_rounds"
    round: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    base: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(8))
    opened_at: Mapped[float] = mapped_column(Double)
    deadline: Mapped[float | None] = mapped_column(Double, nullable=True)
    closed_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    k: Mapped[int] = mapped_column(Integer, default=0)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_up: Mapped[int] = mapped_column(BigInteger, default=0)
    train_loss: Mapped[float | None] = mapped_column(Double, nullable=True)
    accuracy: Mapped[float | None] = mapped_column(Double, nullable=True)
    loss: Mapped[float | None] = mapped_column(Double, nullable=True)
    # Mean accuracy on the devices' local held-out splits: their personal models, the global model they trained
    # from, and how many devices reported them (None when no device did).
    p_accuracy: Mapped[float | None] = mapped_column(Double, nullable=True)
    l_accuracy: Mapped[float | None] = mapped_column(Double, nullable=True)
    p_devices: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AggregateRow(Base):
    """One gateway's aggregate for one round; the unique (gw, round) makes a repeat a duplicate in any worker.

    ``counted_in`` is the round whose global update includes it: its own, or for an aggregate that arrived after
    its round closed, the round open then, with its ``sum`` scaled by ``weight`` (the staleness discount).
    """

    __tablename__ = "iotfl_aggregates"
    __table_args__ = (UniqueConstraint("gw", "round", name="uq_iotfl_aggregates_gw_round"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round: Mapped[int] = mapped_column(ForeignKey(RoundRow.round), index=True)
    gw: Mapped[str] = mapped_column(String(64))
    base: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(BigInteger)
    k: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float] = mapped_column(Double)
    bytes_up: Mapped[int] = mapped_column(BigInteger, default=0)
    devices: Mapped[list[str]] = mapped_column(JSON)
    total: Mapped[bytes] = mapped_column("sum", LargeBinary)
    received_at: Mapped[float] = mapped_column(Double)
    counted_in: Mapped[int] = mapped_column(Integer, index=True)
    weight: Mapped[float] = mapped_column(Double, default=1.0)
    # Σ n per parameter of the devices that trained it (float32; width-sliced devices train a part), None = all n.
    cover: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # The gateway's sums of its devices' local accuracies (flcore.messages.Agg ``pers``), None when none reported.
    pers: Mapped[dict[str, float] | None] = mapped_column(JSON, nullable=True)


class GatewayRow(Base):
    """A gateway the cloud knows; only a sha256 of its token is stored."""

    __tablename__ = "iotfl_gateways"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_seen: Mapped[float | None] = mapped_column(Double, nullable=True)


class DeviceRow(Base):
    """A device named in an accepted aggregate's ``devs``."""

    __tablename__ = "iotfl_devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    gw: Mapped[str] = mapped_column(String(64))
    first_round: Mapped[int] = mapped_column(Integer)
    last_round: Mapped[int] = mapped_column(Integer)


def database_url(url: str) -> str:
    """``url`` with the PostgreSQL driver made explicit (psycopg 3), or a ``CloudError`` for a bad URL."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CloudError(
            f"cannot parse database URL {url!r}; use sqlite:///FILE or postgresql://USER@HOST/DB"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise CloudError(f"unsupported database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL")
    return url


def make_engine(url: str) -> Engine:
    url = database_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, else every pooled connection would see its own empty database.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _sqlite_begin) instead of the sqlite3 module's implicit one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets status readers run while a round closes; the busy timeout covers a second process on the file.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # A writing transaction takes SQLite's write lock up front: a deferred one that read first would fail with
    # SQLITE_BUSY_SNAPSHOT when another process on the same file committed in between.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("iotfl_write") else "BEGIN")


class Storage:
    """The engine and a session factory; ``transaction()`` is one commit-or-rollback unit of work."""

    def __init__(self, url: str):
        self.url = database_url(url)
        self.engine = make_engine(self.url)
        try:
            migrate.upgrade(self.engine)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise CloudError(
                f"cannot open database {make_url(self.url).render_as_string()}: {_first_line(exc)}"
            ) from None
        self._readers = sessionmaker(self.engine, expire_on_commit=False)
        self._writers = sessionmaker(self.engine.execution_options(iotfl_write=True), expire_on_commit=False)

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Session]:
        """A unit of work; ``write=True`` for one that changes rows: it serializes with every other writer, in this
        process or another (SQLite's write lock; on PostgreSQL a transaction-scoped advisory lock, so several
        workers on one database run the round logic one transaction at a time)."""
        with (self._writers if write else self._readers).begin() as session:
            if write and self.engine.dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROUND_LOCK_KEY})
            yield session

    def close(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


# --- meta ---------------------------------------------------------------------------------------------------------


def get_meta(s: Session) -> dict[str, Any]:
    return {row.key: row.value for row in s.scalars(select(MetaRow))}


def put_meta(s: Session, values: dict[str, Any]) -> None:
    for key, value in values.items():
        s.merge(MetaRow(key=key, value=value))


# --- models -------------------------------------------------------------------------------------------------------


def latest_model(s: Session) -> ModelRow | None:
    return s.scalars(select(ModelRow).order_by(ModelRow.version.desc()).limit(1)).first()


def get_model(s: Session, version: int) -> ModelRow | None:
    return s.get(ModelRow, version)


def latest_version(s: Session) -> int:
    return int(s.scalar(select(func.max(ModelRow.version))) or 0)


def model_accuracy(s: Session, version: int) -> float | None:
    """The stored evaluation of a version, without loading its weights."""
    return s.scalar(select(ModelRow.accuracy).where(ModelRow.version == version))


# --- rounds -------------------------------------------------------------------------------------------------------


def current_round(s: Session) -> RoundRow | None:
    return s.scalars(select(RoundRow).order_by(RoundRow.round.desc()).limit(1)).first()


def get_round(s: Session, r: int) -> RoundRow | None:
    return s.get(RoundRow, r)


def get_rounds(s: Session, rounds: set[int]) -> dict[int, RoundRow]:
    return {row.round: row for row in s.scalars(select(RoundRow).where(RoundRow.round.in_(rounds)))}


def closed_rounds(s: Session) -> list[RoundRow]:
    return list(s.scalars(select(RoundRow).where(RoundRow.state == CLOSED).order_by(RoundRow.round)))


def closed_through(newest: RoundRow | None) -> int:
    """The last closed round, from the newest round row: rounds close in order and each close but the final one
    opens the next, so no query is needed."""
    if newest is None:
        return 0
    return newest.round if newest.state == CLOSED else newest.round - 1


# --- aggregates ---------------------------------------------------------------------------------------------------


def stored_pairs(s: Session, pairs: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of these (gw, round) pairs already have an aggregate (one query; reads ids, not the stored sums)."""
    if not pairs:
        return set()
    query = select(AggregateRow.gw, AggregateRow.round).where(tuple_(AggregateRow.gw, AggregateRow.round).in_(pairs))
    return {(gw, r) for gw, r in s.execute(query)}


def round_aggregates(s: Session, r: int) -> list[AggregateRow]:
    """The aggregates round ``r``'s global update includes: its own and those carried into it."""
    return list(s.scalars(select(AggregateRow).where(AggregateRow.counted_in == r).order_by(AggregateRow.id)))


def round_reports(s: Session, r: int) -> tuple[set[str], int]:
    """For an open round ``r`` (one query): the gateways that posted its own aggregate, and how many late aggregates
    of earlier rounds are carried into it."""
    rows = s.execute(select(AggregateRow.gw, AggregateRow.round).where(AggregateRow.counted_in == r)).all()
    return {gw for gw, own in rows if own == r}, sum(own != r for _gw, own in rows)


def rounds_reported(s: Session) -> dict[str, int]:
    rows = s.execute(select(AggregateRow.gw, func.count()).group_by(AggregateRow.gw))
    return {gw: int(count) for gw, count in rows}


# --- gateways and devices -----------------------------------------------------------------------------------------


def sync_gateways(s: Session, token_hashes: dict[str, str]) -> None:
    """One row per configured gateway with its current token hash; unconfigured ones keep their history."""
    known = {row.id: row for row in s.scalars(select(GatewayRow))}
    for gw, digest in token_hashes.items():
        if gw in known:
            known[gw].token_hash = digest
        else:
            s.add(GatewayRow(id=gw, token_hash=digest, last_seen=None))
    for gw, row in known.items():
        if gw not in token_hashes:
            row.token_hash = None


def gateways(s: Session) -> list[GatewayRow]:
    return list(s.scalars(select(GatewayRow).order_by(GatewayRow.id)))


def touch_gateways(s: Session, seen: dict[str, float]) -> None:
    """Record when each gateway was last seen (one query for all of them)."""
    if not seen:
        return
    known = {row.id: row for row in s.scalars(select(GatewayRow).where(GatewayRow.id.in_(seen)))}
    for gw, now in seen.items():
        row = known.get(gw)
        if row is None:
            s.add(GatewayRow(id=gw, token_hash=None, last_seen=now))
        elif row.last_seen is None or row.last_seen < now:
            row.last_seen = now


def live_gateways(s: Session, since: float) -> set[str]:
    """Configured gateways that checked in at or after ``since``."""
    query = select(GatewayRow.id).where(GatewayRow.last_seen >= since, GatewayRow.token_hash.is_not(None))
    return set(s.scalars(query))


def record_devices(s: Session, reports: list[tuple[str, int, list[str]]]) -> None:
    """The devices named by accepted aggregates, as (gw, round, device ids) in order (one query for all)."""
    wanted = {dev for _gw, _r, devices in reports for dev in devices}
    if not wanted:
        return
    known = {row.id: row for row in s.scalars(select(DeviceRow).where(DeviceRow.id.in_(wanted)))}
    for gw, r, devices in reports:
        for dev in dict.fromkeys(devices):
            row = known.get(dev)
            if row is None:
                known[dev] = DeviceRow(id=dev, gw=gw, first_round=r, last_round=r)
                s.add(known[dev])
            else:
                row.last_round = max(row.last_round, r)
                row.gw = gw


def devices_seen(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(DeviceRow)) or 0)
