"""replica tokens: each revision's secret, which only the gateway sends to its replicas

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.add_column(sa.Column("replica_token", sa.String(length=64), nullable=True))
    # Revisions made before get one now: their next replicas start with it. Replicas already
    # running were started without one and accept any caller until they are replaced.
    revisions = sa.table("revisions", sa.column("id", sa.String), sa.column("replica_token"))
    bind = op.get_bind()
    for (revision_id,) in bind.execute(sa.select(revisions.c.id)).all():
        bind.execute(
            revisions.update()
            .where(revisions.c.id == revision_id)
            .values(replica_token=secrets.token_hex(32))
        )
    with op.batch_alter_table("revisions") as batch:
        batch.alter_column("replica_token", existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.drop_column("replica_token")
