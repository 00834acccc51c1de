"""Tables of the metadata database. Alembic migrations in ``migrations/`` create them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite has no BIGINT autoincrement; INTEGER PRIMARY KEY is its 64-bit rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {
        dt.datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class NamespaceRow(Base):
    __tablename__ = "namespaces"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    secret_hash: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None]
    """Refused by the API and the gateway from then on (0006)."""


class KeyRoleRow(Base):
    __tablename__ = "key_roles"
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class ArtifactRow(Base):
    """A model or a dataset: a name whose versions are immutable once committed."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("namespace_id", "kind", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime]


class VersionRow(Base):
    """A draft until committed; ``number`` is assigned by the commit transaction."""

    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("artifact_id", "number"),
        Index("ix_versions_state_updated", "state", "updated_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    number: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    runtime: Mapped[str | None] = mapped_column(String(63))
    signature: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    params: Mapped[dict[str, Any]]
    tags: Mapped[dict[str, Any]]
    lineage: Mapped[dict[str, Any]]
    manifest_digest: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    committed_at: Mapped[dt.datetime | None]


class VersionFileRow(Base):
    __tablename__ = "version_files"
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class AliasRow(Base):
    __tablename__ = "aliases"
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"))
    updated_by: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime]


class AliasHistoryRow(Base):
    __tablename__ = "alias_history"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), index=True)
    alias: Mapped[str] = mapped_column(String(63))
    version_number: Mapped[int | None] = mapped_column(Integer)
    previous_number: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[dt.datetime]


class EventRow(Base):
    """Append-only: rows are inserted in the transaction of the change they describe."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(100), index=True)
    namespace: Mapped[str | None] = mapped_column(String(63), index=True)
    subject: Mapped[str] = mapped_column(String(300), index=True)
    data: Mapped[dict[str, Any]]
    actor: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]


class ConsumerRow(Base):
    """A durable consumer's cursor: the id of the last event it finished handling."""

    __tablename__ = "consumers"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime]


class WebhookRow(Base):
    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"))
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))
    event_types: Mapped[list[Any]]
    created_at: Mapped[dt.datetime]
    deleted_at: Mapped[dt.datetime | None]


class DeliveryRow(Base):
    """One event owed to one webhook: the outbox the delivery worker drains with backoff."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status: Mapped[int | None] = mapped_column(Integer)
    delivered_at: Mapped[dt.datetime | None]


# pipelines ---------------------------------------------------------------------------------------
class PipelineRow(Base):
    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("namespace_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"))
    name: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[dt.datetime]


class PipelineVersionRow(Base):
    """One registered spec; the same content registered twice is one row."""

    __tablename__ = "pipeline_versions"
    __table_args__ = (UniqueConstraint("pipeline_id", "digest"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id"))
    digest: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]]
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "event_id"),
        UniqueConstraint("schedule_id", "fire_time"),
        Index("ix_runs_state", "state"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"), index=True)
    pipeline_version_id: Mapped[int] = mapped_column(ForeignKey("pipeline_versions.id"))
    params: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    schedule_id: Mapped[str | None] = mapped_column(String(32))
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    fire_time: Mapped[dt.datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class StepRunRow(Base):
    """One attempt of one node (a task, or one iteration of a task inside a fan-out)."""

    __tablename__ = "step_runs"
    __table_args__ = (UniqueConstraint("run_id", "node", "attempt"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    node: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    cache_key: Mapped[str | None] = mapped_column(String(64))
    cached_from: Mapped[int | None] = mapped_column(BigInteger)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any]]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class RunHistoryRow(Base):
    __tablename__ = "run_history"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    node: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime]


class CacheEntryRow(Base):
    __tablename__ = "step_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    step_run_id: Mapped[int] = mapped_column(BigInteger)
    outputs: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime]


class ScheduleRow(Base):
    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("namespace_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"))
    name: Mapped[str] = mapped_column(String(63))
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id"))
    kind: Mapped[str] = mapped_column(String(16))
    timing: Mapped[dict[str, Any]]
    params: Mapped[dict[str, Any]]
    max_concurrency: Mapped[int] = mapped_column(Integer, default=1)
    overlap: Mapped[str] = mapped_column(String(8), default="skip")
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    last_fire: Mapped[dt.datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]


class DeploymentRow(Base):
    """A Web API in a namespace: the model it follows, its spec and its traffic."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("namespace_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"))
    name: Mapped[str] = mapped_column(String(63))
    model: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    traffic: Mapped[Any] = mapped_column(JSON)
    """Targets, sticky header and shadow (a bare list of targets before 0004)."""
    rollout: Mapped[dict[str, Any]]
    """How a new revision takes the traffic (replace or canary); not part of revisions."""
    slos: Mapped[list[Any]]
    """Objectives on availability and latency, judged over the traffic minutes."""
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class RevisionRow(Base):
    """An immutable snapshot of a deployment: one model version and one spec."""

    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("deployment_id", "number"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    version_id: Mapped[str | None] = mapped_column(ForeignKey("versions.id"))
    """None for a realtime revision without a model (0009)."""
    version_number: Mapped[int] = mapped_column(Integer)
    """0 for a realtime revision without a model."""
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]
    ready_at: Mapped[dt.datetime | None]
    retired_at: Mapped[dt.datetime | None]
    replica_token: Mapped[str] = mapped_column(String(64))
    """The secret its replicas require of every caller, which only the gateway gets (0005)."""
    workload: Mapped[str] = mapped_column(String(32), default="model-server")
    """What its replicas run (`modelyard.serving.states.Workload`) (0008)."""


class TrafficMinuteRow(Base):
    """What the gateway measured for a deployment in one minute: the SLOs' source."""

    __tablename__ = "traffic_minutes"
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), primary_key=True)
    minute: Mapped[dt.datetime] = mapped_column(primary_key=True)
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    buckets: Mapped[list[Any]]
    """Requests per latency bucket (the gateway's histogram bounds, not cumulative), last: above."""
    lag_samples: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Of a realtime deployment: lag samples the gateway took in the minute (0012)."""
    lag_buckets: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    """Lag samples per bucket of `LAG_BUCKETS` (ages of the oldest pending event), last: above."""


class SloAlertRow(Base):
    """One firing (and later resolved) burn-rate alert of a deployment's objective."""

    __tablename__ = "slo_alerts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    objective: Mapped[str] = mapped_column(String(63))
    severity: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16))
    fired_at: Mapped[dt.datetime]
    resolved_at: Mapped[dt.datetime | None]
    evidence: Mapped[dict[str, Any]]


class RolloutRow(Base):
    """Moving a deployment's traffic from its stable revision to a new one, step by step."""

    __tablename__ = "rollouts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"), index=True)
    stable: Mapped[int] = mapped_column(Integer)
    canary: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)
    step_started_at: Mapped[dt.datetime]
    analyses: Mapped[list[Any]]
    reason: Mapped[str | None] = mapped_column(Text)
    started_by: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]


class StreamRow(Base):
    """A realtime stream: the fields of its events; the events live in the realtime event store."""

    __tablename__ = "realtime_streams"
    __table_args__ = (UniqueConstraint("namespace_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("namespaces.id"))
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]]
    created_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime]


class UiSessionRow(Base):
    """A dashboard session (0011): only the hash of the token its cookie holds is stored."""

    __tablename__ = "ui_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    last_seen_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    """The sooner of idle expiry (from ``last_seen_at``) and the absolute limit (from creation)."""


class ControlPlaneLeaseRow(Base):
    """Who may run the controllers (0010): one row, taken and renewed by compare-and-set.

    Times are seconds since the epoch by the database's own clock (PostgreSQL's, or on SQLite the
    clock of the one machine that holds the file), so that holders compare them with one clock."""

    __tablename__ = "control_plane_lease"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(255))
    """The holder's identity (host, pid and a random part); None once released."""
    holder_url: Mapped[str | None] = mapped_column(String(1024))
    """Where the holder serves its API, for a standby to name it."""
    seat: Mapped[str | None] = mapped_column(String(512))
    """The holder's host and home when it held the home's lock file, which it keeps while it
    lives: a process of the same seat that holds that lock now knows the holder is gone."""
    term: Mapped[int] = mapped_column(BigInteger)
    """Raised by one at each acquisition: a fencing number that never goes back."""
    duration_seconds: Mapped[float] = mapped_column(Float)
    acquired_at: Mapped[float | None] = mapped_column(Float)
    renewed_at: Mapped[float | None] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
