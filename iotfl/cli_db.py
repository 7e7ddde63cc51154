"""The cloud's database commands: ``iotfl db current`` and ``iotfl db upgrade`` (Alembic revisions, cloud.migrate)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from iotfl.cli_common import fail, opt

if TYPE_CHECKING:
    from sqlalchemy import Engine

db_app = typer.Typer(
    help="The cloud's database schema: its Alembic revision, and the upgrade `iotfl cloud` also runs at start."
)
_Revisions = tuple[str | None, str | None]  # before and after
DbOpt = Annotated[str, opt("sqlite:///FILE or postgresql://user@host/db", "DB")]
out = Console()


def _engine(url: str, *, must_exist: bool) -> Engine:
    try:
        from sqlalchemy.engine import make_url

        from cloud.storage import database_url, make_engine
    except ImportError as exc:
        fail(f"the cloud needs its extra: pip install 'iotfl[cloud]' ({exc.name} is missing)")
    try:
        url = database_url(url)
    except ValueError as exc:
        fail(str(exc))
    parsed = make_url(url)
    if must_exist and parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        fail(f"no SQLite database at {parsed.database!r}")
    return make_engine(url)


def _run(url: str, must_exist: bool, step: Callable[[Engine], _Revisions]) -> _Revisions:
    """``step`` on the database at ``url``, or exit with a clear line when it cannot be opened."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = _engine(url, must_exist=must_exist)
    try:
        return step(engine)
    except SQLAlchemyError as exc:
        fail(f"cannot open database: {str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}")
    finally:
        engine.dispose()


@db_app.command("current")
def db_current(db: DbOpt = "sqlite:///iotfl.db") -> None:
    """Print the database's schema revision and this release's newest (a database from before migrations shows
    the revision its tables match)."""
    from cloud import migrate

    revision, _ = _run(db, True, lambda engine: (migrate.current(engine),) * 2)
    head = migrate.head()
    note = "up to date" if revision == head else f"`iotfl db upgrade` or `iotfl cloud` brings it to {head}"
    out.print(f"revision {revision or '(empty database)'}, newest {head}: {note}")


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = "sqlite:///iotfl.db") -> None:
    """Upgrade the database to this release's newest schema revision (what `iotfl cloud` does at start)."""
    from cloud import migrate

    before, after = _run(db, False, migrate.upgrade)
    if before == after:
        out.print(f"revision {after}: already up to date")
    else:
        out.print(f"upgraded from {before or '(empty database)'} to {after}")
