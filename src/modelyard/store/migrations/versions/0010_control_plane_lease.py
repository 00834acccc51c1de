"""control plane lease: one control plane writes at a time

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LEASE = "control-plane"


def upgrade() -> None:
    table = op.create_table(
        "control_plane_lease",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("holder_url", sa.String(1024), nullable=True),
        sa.Column("seat", sa.String(512), nullable=True),
        sa.Column("term", sa.BigInteger(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=True),
        sa.Column("renewed_at", sa.Float(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    # The one row exists from the start: taking the lease is then always an UPDATE, which
    # PostgreSQL and SQLite both run as a compare-and-set on the row.
    op.bulk_insert(
        table,
        [{"name": LEASE, "holder": None, "term": 0, "duration_seconds": 0.0, "expires_at": 0.0}],
    )


def downgrade() -> None:
    op.drop_table("control_plane_lease")
