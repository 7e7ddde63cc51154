"""The dashboard's fleet view: each gateway's latest report and each device's latest retained status
(docs/protocol.md "Gateway reports and the dashboard").

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "iotfl_device_status",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("gw", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("battery", sa.Double, nullable=True),
        sa.Column("rssi", sa.SmallInteger, nullable=True),
        sa.Column("ram_class", sa.String(32), nullable=True),
        sa.Column("fw", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_index("ix_iotfl_device_status_gw", "iotfl_device_status", ["gw"])
    op.create_index("ix_iotfl_device_status_state", "iotfl_device_status", ["state"])
    op.create_table(
        "iotfl_gateway_reports",
        sa.Column("gw", sa.String(64), primary_key=True),
        sa.Column("reported_at", sa.Double, nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("devices", sa.Integer, nullable=False),
        sa.Column("live", sa.Integer, nullable=False),
        sa.Column("bytes_up", sa.BigInteger, nullable=False),
        sa.Column("counters", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("iotfl_gateway_reports")
    op.drop_index("ix_iotfl_device_status_state", "iotfl_device_status")
    op.drop_index("ix_iotfl_device_status_gw", "iotfl_device_status")
    op.drop_table("iotfl_device_status")
