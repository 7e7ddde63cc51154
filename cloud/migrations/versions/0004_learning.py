"""Learning quality (issue 9): the server optimizer's state kept with each model version, the devices'
personalized and local accuracy per round, and heterogeneous-width aggregates.

- ``iotfl_models.opt_state``: the server optimizer's state (momentum, Adam moments) after producing the version,
  written in the same transaction, so a restarted cloud goes on with the same optimizer state.
- ``iotfl_rounds.p_accuracy`` / ``l_accuracy`` / ``p_devices``: the mean accuracy the round's devices measured on
  their local held-out splits, with their personal model and with the global model they trained from, and how
  many devices reported them.
- ``iotfl_aggregates.cover`` (float32 per parameter, Σ n of the devices that trained it; NULL = every parameter
  trained on all ``n``) and ``pers`` (the gateway's sums of those accuracies).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("iotfl_models") as batch:
        batch.add_column(sa.Column("opt_state", sa.LargeBinary, nullable=True))
    with op.batch_alter_table("iotfl_rounds") as batch:
        batch.add_column(sa.Column("p_accuracy", sa.Double, nullable=True))
        batch.add_column(sa.Column("l_accuracy", sa.Double, nullable=True))
        batch.add_column(sa.Column("p_devices", sa.Integer, nullable=True))
    with op.batch_alter_table("iotfl_aggregates") as batch:
        batch.add_column(sa.Column("cover", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("pers", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("iotfl_aggregates") as batch:
        batch.drop_column("pers")
        batch.drop_column("cover")
    with op.batch_alter_table("iotfl_rounds") as batch:
        batch.drop_column("p_devices")
        batch.drop_column("l_accuracy")
        batch.drop_column("p_accuracy")
    with op.batch_alter_table("iotfl_models") as batch:
        batch.drop_column("opt_state")
