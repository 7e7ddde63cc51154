"""Alembic environment: the cloud hands over its own open connection (``config.attributes["connection"]``)."""

from __future__ import annotations

from alembic import context

import cloud.fleet  # noqa: F401  (registers the dashboard's tables on Base)
from cloud.storage import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the cloud's migrations through cloud.migrate (iotfl cloud db upgrade), not alembic's CLI")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
