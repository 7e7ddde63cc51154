"""The cloud's schema through Alembic: ``upgrade`` brings a database to head (the cloud runs it at start),
``current`` says which revision it is at. A database from before migrations (iotfl tables, no ``alembic_version``)
is stamped with the revision its tables match, then upgraded like any other."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of schema changes (distinct from the round service's ROUND_LOCK_KEY in cloud.storage).
MIGRATION_LOCK_KEY = 0x10F1_0001
FIRST, CARRY = "0001", "0002"  # the revisions a database from before migrations can be at


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "cloud:migrations")
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this release ships."""
    config = Config()
    config.set_main_option("script_location", "cloud:migrations")
    return str(ScriptDirectory.from_config(config).get_current_head())


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One connection in a transaction; on PostgreSQL it holds the migration lock, so workers starting together
    migrate one after another (the later ones find the schema at head)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        yield connection


def current(engine: Engine) -> str | None:
    """The database's revision: None for an empty database, the matching one for a database from before
    migrations."""
    with engine.connect() as connection:
        return _revision(connection)


def _revision(connection: Connection) -> str | None:
    stamped = MigrationContext.configure(connection).get_current_revision()
    if stamped is not None:
        return stamped
    tables = set(inspect(connection).get_table_names())
    if "iotfl_aggregates" not in tables:
        return None
    columns = {c["name"] for c in inspect(connection).get_columns("iotfl_aggregates")}
    return CARRY if "counted_in" in columns else FIRST


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to head; returns the revisions before and after."""
    with _locked(engine) as connection:
        config = _config(connection)
        before = _revision(connection)
        if before is not None and MigrationContext.configure(connection).get_current_revision() is None:
            command.stamp(config, before)
            log.info("database from before migrations: stamped at revision %s", before)
        after = head()
        if before != after:
            command.upgrade(config, "head")
            log.info("database upgraded from revision %s to %s", before or "(empty)", after)
        return before, after
