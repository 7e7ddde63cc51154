"""Alembic migrations on SQLite and PostgreSQL: a fresh database reaches head and matches the models; a database
the previous release created (its tables, no alembic_version) is stamped and upgraded with its rows kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

import cloud.fleet  # noqa: F401  (its rows are part of the models compared)
from cloud import migrate
from cloud.storage import Base, Storage, make_engine

# The dashboard's tables came with revision 0003, after the release that had no migrations.
FLEET_TABLES = {"iotfl_device_status", "iotfl_gateway_reports"}
# The columns revision 0004 added (server optimizer state, local accuracies, heterogeneous widths).
LEARNING_COLUMNS = {
    "iotfl_models": ("opt_state",),
    "iotfl_rounds": ("p_accuracy", "l_accuracy", "p_devices"),
    "iotfl_aggregates": ("cover", "pers"),
}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _schema_drift(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def _previous_release(engine: Engine, *, carry: bool) -> None:
    """The tables as the release before migrations made them (create_all), one closed round and its aggregate;
    ``carry=False``: from before late aggregates were carried (no counted_in, no weight)."""
    Base.metadata.create_all(engine, tables=[t for t in Base.metadata.sorted_tables if t.name not in FLEET_TABLES])
    with engine.begin() as conn:
        for table, columns in LEARNING_COLUMNS.items():
            for column in columns:
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        if not carry:
            conn.execute(text("DROP INDEX ix_iotfl_aggregates_counted_in"))
            conn.execute(text("ALTER TABLE iotfl_aggregates DROP COLUMN counted_in"))
            conn.execute(text("ALTER TABLE iotfl_aggregates DROP COLUMN weight"))
        conn.execute(
            text(
                "INSERT INTO iotfl_rounds (round, base, state, opened_at, k, n, bytes_up) "
                "VALUES (1, 0, 'closed', 0, 1, 4, 10)"
            )
        )
        columns = "round, gw, base, n, k, loss, bytes_up, devices, sum, received_at"
        values = "1, 'gw0', 0, 4, 1, 0.5, 10, '[]', :total, 0"
        if carry:
            columns, values = columns + ", counted_in, weight", values + ", 1, 0.5"
        conn.execute(text(f"INSERT INTO iotfl_aggregates ({columns}) VALUES ({values})"), {"total": b"\0" * 4})


def _aggregates(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT gw, round, n, counted_in, weight FROM iotfl_aggregates"))]


def test_a_fresh_database_is_migrated_to_head_and_matches_the_models(engine: Engine, db_url: str) -> None:
    assert migrate.current(engine) is None
    Storage(db_url).close()
    assert migrate.current(engine) == migrate.head() == "0004"
    assert _schema_drift(engine) == []
    assert migrate.upgrade(engine) == ("0004", "0004")  # at head: nothing to do


@pytest.mark.parametrize("carry", [True, False], ids=["previous-release", "before-carry"])
def test_a_database_of_an_earlier_release_is_stamped_and_upgraded(engine: Engine, db_url: str, carry: bool) -> None:
    _previous_release(engine, carry=carry)
    assert migrate.current(engine) == ("0002" if carry else "0001")
    Storage(db_url).close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == migrate.head()
    # its row kept: counted in its own round, at the weight it had (full weight for one from before carrying)
    assert _aggregates(engine) == [("gw0", 1, 4, 1, 0.5 if carry else 1.0)]
    assert _schema_drift(engine) == []
