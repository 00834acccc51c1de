"""realtime deployments become deployments with a realtime workload

Each row of ``realtime_deployments`` becomes a deployment whose spec has a ``realtime`` section,
with a first revision (``realtime-worker``) pinning the version its model reference resolves to
now (none when it has no model, or the reference resolves to nothing yet: the next commit or
alias move makes one). A revision of a realtime deployment without a model has no version, so
``revisions.version_id`` may be null. The table goes.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_OWN = ("model", "env")
"""A realtime spec's fields that are not its worker's section."""

_realtime = sa.table(
    "realtime_deployments",
    sa.column("id", sa.String),
    sa.column("namespace_id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("spec", sa.JSON),
    sa.column("created_by", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
_deployments = sa.table(
    "deployments",
    sa.column("id", sa.String),
    sa.column("namespace_id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("model", sa.String),
    sa.column("spec", sa.JSON),
    sa.column("traffic", sa.JSON),
    sa.column("rollout", sa.JSON),
    sa.column("slos", sa.JSON),
    sa.column("created_by", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
_revisions = sa.table(
    "revisions",
    sa.column("id", sa.String),
    sa.column("deployment_id", sa.String),
    sa.column("number", sa.Integer),
    sa.column("version_id", sa.String),
    sa.column("version_number", sa.Integer),
    sa.column("spec", sa.JSON),
    sa.column("state", sa.String),
    sa.column("reason", sa.Text),
    sa.column("created_by", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("ready_at", sa.DateTime(timezone=True)),
    sa.column("retired_at", sa.DateTime(timezone=True)),
    sa.column("replica_token", sa.String),
    sa.column("workload", sa.String),
)
_artifacts = sa.table(
    "artifacts",
    sa.column("id", sa.Integer),
    sa.column("namespace_id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("name", sa.String),
)
_versions = sa.table(
    "versions",
    sa.column("id", sa.String),
    sa.column("artifact_id", sa.Integer),
    sa.column("number", sa.Integer),
    sa.column("state", sa.String),
)
_aliases = sa.table(
    "aliases",
    sa.column("artifact_id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("version_id", sa.String),
)


def upgrade() -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.alter_column("version_id", existing_type=sa.String(length=32), nullable=True)
    bind = op.get_bind()
    now = dt.datetime.now(dt.UTC)
    for row in bind.execute(sa.select(_realtime)).mappings().all():
        taken = bind.scalar(
            sa.select(_deployments.c.id).where(
                _deployments.c.namespace_id == row["namespace_id"],
                _deployments.c.name == row["name"],
            )
        )
        if taken is not None:
            raise RuntimeError(
                f"realtime deployment {row['name']} (namespace id {row['namespace_id']}) has the "
                "name of a deployment of its namespace: realtime deployments are deployments "
                "now; delete or rename one of the two with the previous release, then upgrade"
            )
        spec: dict[str, Any] = dict(row["spec"])
        model = spec.get("model")
        deployment = {
            "model": model,
            "realtime": {k: v for k, v in spec.items() if k not in _OWN},
            "env": spec.get("env") or {},
        }
        bind.execute(
            _deployments.insert().values(
                id=row["id"],
                namespace_id=row["namespace_id"],
                name=row["name"],
                model=model or "",
                spec=deployment,
                traffic={"targets": [{"percent": 100}]},
                rollout={"strategy": "replace"},
                slos=[],
                created_by=row["created_by"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
        )
        version = _resolve(bind, row["namespace_id"], model) if model else (None, 0)
        if model and version[0] is None:
            continue  # nothing to pin yet: the next commit or alias move makes the revision
        bind.execute(
            _revisions.insert().values(
                id=uuid.uuid4().hex,
                deployment_id=row["id"],
                number=1,
                version_id=version[0],
                version_number=version[1],
                spec=deployment,
                state="deploying",
                reason=None,
                created_by=row["created_by"],
                created_at=now,
                ready_at=None,
                retired_at=None,
                replica_token=secrets.token_hex(32),
                workload="realtime-worker",
            )
        )
    op.drop_table("realtime_deployments")


def _resolve(bind: sa.Connection, namespace_id: int, model: str) -> tuple[str | None, int]:
    """The version ``name@ref`` names in the namespace now: (its id, its number), or (None, 0)."""
    name, _, ref = model.partition("@")
    artifact = bind.scalar(
        sa.select(_artifacts.c.id).where(
            _artifacts.c.namespace_id == namespace_id,
            _artifacts.c.kind == "model",
            _artifacts.c.name == name,
        )
    )
    if artifact is None:
        return None, 0
    committed = sa.select(_versions.c.id, _versions.c.number).where(
        _versions.c.artifact_id == artifact, _versions.c.state == "committed"
    )
    if ref == "latest":
        query = committed.order_by(_versions.c.number.desc()).limit(1)
    elif ref.isdigit():
        query = committed.where(_versions.c.number == int(ref))
    else:
        alias = sa.select(_aliases.c.version_id).where(
            _aliases.c.artifact_id == artifact, _aliases.c.name == ref
        )
        query = committed.where(_versions.c.id == alias.scalar_subquery())
    found = bind.execute(query).first()
    return (str(found[0]), int(found[1])) if found else (None, 0)


def downgrade() -> None:
    op.create_table(
        "realtime_deployments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["namespace_id"], ["namespaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace_id", "name"),
    )
    bind = op.get_bind()
    realtime = [
        row
        for row in bind.execute(sa.select(_deployments)).mappings().all()
        if isinstance(row["spec"], dict) and row["spec"].get("realtime")
    ]
    for row in realtime:
        spec = row["spec"]
        bind.execute(
            _realtime.insert().values(
                id=row["id"],
                namespace_id=row["namespace_id"],
                name=row["name"],
                spec={**spec["realtime"], "model": spec.get("model"), "env": spec.get("env") or {}},
                created_by=row["created_by"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
            )
        )
        for table in ("revisions", "rollouts", "slo_alerts", "traffic_minutes"):
            bind.execute(
                sa.text(f"DELETE FROM {table} WHERE deployment_id = :id"), {"id": row["id"]}
            )
        bind.execute(_deployments.delete().where(_deployments.c.id == row["id"]))
    with op.batch_alter_table("revisions") as batch:
        batch.alter_column("version_id", existing_type=sa.String(length=32), nullable=False)
