"""lag minutes: the lag samples of realtime deployments, per minute, beside their traffic counts

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traffic_minutes") as batch:
        batch.add_column(sa.Column("lag_samples", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lag_buckets", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("traffic_minutes") as batch:
        batch.drop_column("lag_buckets")
        batch.drop_column("lag_samples")
