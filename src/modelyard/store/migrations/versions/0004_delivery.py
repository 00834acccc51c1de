"""progressive delivery: rollout strategies, rollouts, SLOs, traffic minutes, alerts

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
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(
            sa.Column(
                "rollout", sa.JSON(), nullable=False, server_default='{"strategy": "replace"}'
            )
        )
        batch.add_column(sa.Column("slos", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "traffic_minutes",
        sa.Column("deployment_id", sa.String(length=32), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("buckets", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"]),
        sa.PrimaryKeyConstraint("deployment_id", "minute"),
    )
    op.create_table(
        "slo_alerts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deployment_id", sa.String(length=32), nullable=False),
        sa.Column("objective", sa.String(length=63), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_slo_alerts_deployment_id", "slo_alerts", ["deployment_id"])
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("deployment_id", sa.String(length=32), nullable=False),
        sa.Column("stable", sa.Integer(), nullable=False),
        sa.Column("canary", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("analyses", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_by", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollouts_deployment_id", "rollouts", ["deployment_id"])
    # A deployment's history (its audit trail) reads its events by subject.
    op.create_index("ix_events_subject", "events", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_events_subject", table_name="events")
    op.drop_index("ix_rollouts_deployment_id", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_index("ix_slo_alerts_deployment_id", table_name="slo_alerts")
    op.drop_table("slo_alerts")
    op.drop_table("traffic_minutes")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("slos")
        batch.drop_column("rollout")
