"""The schema of the first release: meta, models, rounds, aggregates (one per gateway and round), gateways, devices.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "iotfl_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
    )
    op.create_table(
        "iotfl_models",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("weights", sa.LargeBinary, nullable=False),
        sa.Column("accuracy", sa.Double, nullable=False),
        sa.Column("loss", sa.Double, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_table(
        "iotfl_rounds",
        sa.Column("round", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("base", sa.Integer, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("opened_at", sa.Double, nullable=False),
        sa.Column("deadline", sa.Double, nullable=True),
        sa.Column("closed_at", sa.Double, nullable=True),
        sa.Column("k", sa.Integer, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("bytes_up", sa.BigInteger, nullable=False),
        sa.Column("train_loss", sa.Double, nullable=True),
        sa.Column("accuracy", sa.Double, nullable=True),
        sa.Column("loss", sa.Double, nullable=True),
    )
    op.create_table(
        "iotfl_aggregates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("round", sa.Integer, sa.ForeignKey("iotfl_rounds.round"), nullable=False),
        sa.Column("gw", sa.String(64), nullable=False),
        sa.Column("base", sa.Integer, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("k", sa.Integer, nullable=False),
        sa.Column("loss", sa.Double, nullable=False),
        sa.Column("bytes_up", sa.BigInteger, nullable=False),
        sa.Column("devices", sa.JSON, nullable=False),
        sa.Column("sum", sa.LargeBinary, nullable=False),
        sa.Column("received_at", sa.Double, nullable=False),
        sa.UniqueConstraint("gw", "round", name="uq_iotfl_aggregates_gw_round"),
    )
    op.create_index("ix_iotfl_aggregates_round", "iotfl_aggregates", ["round"])
    op.create_table(
        "iotfl_gateways",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("last_seen", sa.Double, nullable=True),
    )
    op.create_table(
        "iotfl_devices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("gw", sa.String(64), nullable=False),
        sa.Column("first_round", sa.Integer, nullable=False),
        sa.Column("last_round", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in ("iotfl_devices", "iotfl_gateways", "iotfl_aggregates", "iotfl_rounds", "iotfl_models", "iotfl_meta"):
        op.drop_table(table)
