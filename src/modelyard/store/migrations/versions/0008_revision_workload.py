"""revision workload: what a revision's replicas run (the model server for every revision so far)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(
            sa.Column(
                "workload", sa.String(length=32), nullable=False, server_default="model-server"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("workload")
