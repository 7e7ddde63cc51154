"""``iotfl db upgrade`` and ``iotfl db current`` on SQLite and PostgreSQL: revisions printed, clear errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cloud import migrate
from iotfl.cli import app

runner = CliRunner()


def test_upgrade_then_current(db_url: str) -> None:
    first = runner.invoke(app, ["db", "upgrade", "--db", db_url])
    assert first.exit_code == 0 and f"upgraded from (empty database) to {migrate.head()}" in first.output
    again = runner.invoke(app, ["db", "upgrade", "--db", db_url])
    assert again.exit_code == 0 and "already up to date" in again.output
    current = runner.invoke(app, ["db", "current", "--db", db_url])
    assert (
        current.exit_code == 0 and f"revision {migrate.head()}, newest {migrate.head()}: up to date" in current.output
    )


def test_clear_errors_and_nothing_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = runner.invoke(app, ["db", "current", "--db", f"sqlite:///{missing}"])
    assert result.exit_code == 2 and "no SQLite database" in result.output and not missing.exists()
    result = runner.invoke(app, ["db", "current", "--db", "mysql://x/y"])
    assert result.exit_code == 2 and "unsupported database 'mysql'" in result.output
    result = runner.invoke(app, ["db", "upgrade", "--db", "postgresql://postgres@127.0.0.1:1/test"])
    assert result.exit_code == 2 and "cannot open database" in result.output and "Traceback" not in result.output
