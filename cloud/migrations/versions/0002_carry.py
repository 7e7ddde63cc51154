"""Late aggregates carried into a later round: ``counted_in`` (the round whose update includes it) and ``weight``
(its staleness discount); existing rows count in their own round at full weight.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added nullable, filled, then made NOT NULL: the one way that works on tables that already hold rows.
    with op.batch_alter_table("iotfl_aggregates") as batch:
        batch.add_column(sa.Column("counted_in", sa.Integer, nullable=True))
        batch.add_column(sa.Column("weight", sa.Double, nullable=True))
    op.execute("UPDATE iotfl_aggregates SET counted_in = round, weight = 1.0")
    with op.batch_alter_table("iotfl_aggregates") as batch:
        batch.alter_column("counted_in", existing_type=sa.Integer, nullable=False)
        batch.alter_column("weight", existing_type=sa.Double, nullable=False)
    op.create_index("ix_iotfl_aggregates_counted_in", "iotfl_aggregates", ["counted_in"])


def downgrade() -> None:
    op.drop_index("ix_iotfl_aggregates_counted_in", "iotfl_aggregates")
    with op.batch_alter_table("iotfl_aggregates") as batch:
        batch.drop_column("weight")
        batch.drop_column("counted_in")
