"""Cloud fixtures: a database per test (a SQLite file, and a fresh PostgreSQL schema when the server runs) and a
real uvicorn cloud in a thread on a free port, spoken to over HTTP with httpx."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloud_client import TOKENS, Cloud

from cloud.server import running
from cloud.settings import CloudSettings
from flcore.datasets import Dataset, sensors

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=2):
            return None
    except Exception as exc:  # any failure means: no usable server here
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


@contextmanager
def _postgres_schema() -> Iterator[str]:
    """A URL on a throwaway schema in PostgreSQL's `test` database (dropped afterwards), or a skip saying why not."""
    problem = _postgres_problem()
    if problem is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (database test) is not reachable: {problem}")
    import psycopg

    schema = f"iotfl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: a SQLite file in tmp_path, or a throwaway schema in PostgreSQL's `test` database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    with _postgres_schema() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL schema, for what only PostgreSQL does (several workers on one database)."""
    with _postgres_schema() as url:
        yield url


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    return sensors(0, samples=400)


StartCloud = Callable[..., Cloud]


@pytest.fixture
def start_cloud(db_url: str, dataset: Dataset) -> Iterator[StartCloud]:
    """Start a cloud on the test's database (several in turn to restart: ``cloud.stop()``); all stop at the end."""
    with ExitStack() as everything:

        def start(data: Dataset = dataset, **overrides: Any) -> Cloud:
            values: dict[str, Any] = dict(
                db=db_url,
                port=0,
                gateway_tokens=TOKENS,
                dataset=data.name,
                rounds=3,
                round_timeout=30.0,
                lr=0.1,
                epochs=1,
                batch=4,
                chunk=64,
            )
            values.update(overrides)
            settings = CloudSettings(**values)
            own = everything.enter_context(ExitStack())
            url = own.enter_context(running(settings, data))
            http = own.enter_context(httpx.Client(base_url=url, timeout=10.0))
            return Cloud(url, settings, data, http, own)

        yield start


@pytest.fixture
def cloud(start_cloud: StartCloud) -> Cloud:
    return start_cloud()
