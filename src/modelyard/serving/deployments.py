"""Deployments and revisions: what data scientists create, and the immutable snapshots of it.

A deployment names a model of its namespace by alias, ``latest`` or number, and a spec (autoscaling,
batching, resources, limits). Every change of the resolved version or of the spec makes a new
Revision, numbered from 1; revisions never change after that except for their state:
``deploying`` -> ``ready`` | ``failed``, and ``ready`` -> ``retired`` when no traffic reaches it.

Traffic is a list of targets: a revision number (or none: "the latest ready revision"), a percent
and an optional tag that addresses the revision directly. The default sends 100% to the latest
ready revision, which is the straight replacement rollout: a new revision takes the traffic the
moment it is ready, and a revision that never gets ready never gets any.

A deployment with a ``realtime`` section (fixed at creation) runs realtime workers: the same
revisions (one without a model pins no version) and push deploys, but no request reaches them; the
latest ready revision replaces the one before.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.events.log import EventLog
from modelyard.events.types import EventType
from modelyard.realtime.streams import check_not_reserved
from modelyard.registry._lookup import artifact_row, named_row, namespace_row, version_row
from modelyard.serving.records import (
    LATEST_READY,
    DeploymentInfo,
    DeploymentSpec,
    RevisionInfo,
    RolloutStrategy,
    SpecPatch,
    Traffic,
)
from modelyard.serving.replica_headers import new_token
from modelyard.serving.states import ACTIVE_ROLLOUT, REVISION_EVENTS, RevisionState, Workload
from modelyard.serving.traffic import resolve_traffic, stored_traffic, was_ready
from modelyard.store.schema import (
    DeploymentRow,
    NamespaceRow,
    RevisionRow,
    RolloutRow,
    SloAlertRow,
    StreamRow,
    TrafficMinuteRow,
)
from modelyard.types import check_name


@dataclass(frozen=True)
class Revision:
    """What the serving controller needs of a revision to run it."""

    id: str
    number: int
    name: str
    namespace: str
    deployment: str
    deployment_id: str
    model: str  # namespace/name@number; empty for a realtime revision without a model
    spec: DeploymentSpec
    state: str
    workload: Workload = Workload.MODEL_SERVER
    token: str = dataclasses.field(default="", repr=False)
    """The secret its replicas require of every caller (see `modelyard.serving.replica_headers`);
    out of ``repr`` so that no log line shows it."""


@dataclass(frozen=True)
class Route:
    """A routed revision: its share of the traffic and its tags."""

    revision: Revision
    percent: int
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """One deployment as the controller runs it: routed revisions, the one deploying (if any) and
    those that must stop."""

    namespace: str
    name: str
    routes: list[Route]
    deploying: Revision | None
    idle: list[Revision]
    status: str
    timeout_s: float
    max_body_bytes: int
    deployment_id: str = ""
    sticky_header: str | None = None
    shadow: Route | None = None
    workload: Workload = Workload.MODEL_SERVER


def revision_name(deployment: str, number: int) -> str:
    return f"{deployment}-{number:05d}"


class Deployments:
    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.db = events.db
        self.on_ready: Callable[[Session, DeploymentRow, RevisionRow, str], None] | None = None
        """Called in the transaction that marks a revision ready for the first time (rollouts
        take its traffic there, before the straight replacement would)."""

    # writes -------------------------------------------------------------------------------------
    def create(
        self,
        namespace: str,
        name: str,
        spec: DeploymentSpec,
        actor: str | None = None,
        rollout: RolloutStrategy | None = None,
    ) -> DeploymentInfo:
        check_name(name, "deployment name")
        check_not_reserved(name)
        now = self.events.clock()
        with self.db.write() as session:
            ns = namespace_row(session, namespace)
            if named_row(session, DeploymentRow, ns.id, name) is not None:
                raise Conflict(
                    f"deployment {namespace}/{name} exists: change it with "
                    f"'modelyard deployments update {namespace}/{name}'"
                )
            _check_stream(session, ns.id, namespace, spec)
            _check_strategy(
                spec.model_dump(mode="json"), rollout or RolloutStrategy(), f"{namespace}/{name}"
            )
            row = DeploymentRow(
                id=uuid.uuid4().hex,
                namespace_id=ns.id,
                name=name,
                model=spec.model or "",
                spec=spec.model_dump(mode="json"),
                traffic=LATEST_READY.model_dump(mode="json"),
                rollout=(rollout or RolloutStrategy()).model_dump(mode="json"),
                slos=[],
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            self._new_revision(session, row, namespace, spec, actor)
            self.events.append(
                session,
                EventType.DEPLOYMENT_CREATED,
                f"{namespace}/{name}",
                {"model": spec.model, "spec": row.spec, "rollout": row.rollout},
                namespace=namespace,
                actor=actor,
            )
        return self.get(namespace, name)

    def set_strategy(
        self, namespace: str, name: str, strategy: RolloutStrategy, actor: str | None = None
    ) -> DeploymentInfo:
        """How the next revisions take the traffic; a rollout under way keeps its own."""
        with self.db.write() as session:
            row = self.row(session, namespace, name, lock=True)
            _check_strategy(row.spec, strategy, f"{namespace}/{name}")
            row.rollout = strategy.model_dump(mode="json")
            row.updated_at = self.events.clock()
            self.events.append(
                session,
                EventType.DEPLOYMENT_STRATEGY_CHANGED,
                f"{namespace}/{name}",
                {"rollout": row.rollout},
                namespace=namespace,
                actor=actor,
            )
        return self.get(namespace, name)

    def update(
        self, namespace: str, name: str, patch: SpecPatch, actor: str | None = None
    ) -> DeploymentInfo:
        with self.db.write() as session:
            row = self.row(session, namespace, name, lock=True)
            current = DeploymentSpec.model_validate(row.spec)
            changes = patch.model_dump(exclude_unset=True)
            spec = DeploymentSpec.model_validate({**current.model_dump(), **changes})
            if spec.workload != current.workload:
                raise Conflict(
                    f"deployment {namespace}/{name} runs a {current.workload}; a deployment's "
                    "kind is fixed at creation: create another deployment for a "
                    f"{spec.workload}",
                    field="realtime",
                )
            _check_stream(session, row.namespace_id, namespace, spec)
            row.spec, row.model = spec.model_dump(mode="json"), spec.model or ""
            row.updated_at = self.events.clock()
            revision = self._new_revision(session, row, namespace, spec, actor)
            self.events.append(
                session,
                EventType.DEPLOYMENT_UPDATED,
                f"{namespace}/{name}",
                {"changes": sorted(changes), "revision": revision.number if revision else None},
                namespace=namespace,
                actor=actor,
            )
        return self.get(namespace, name)

    def set_traffic(
        self, namespace: str, name: str, traffic: Traffic, actor: str | None = None
    ) -> DeploymentInfo:
        with self.db.write() as session:
            row = self.row(session, namespace, name, lock=True)
            if row.spec.get("realtime"):
                # Its workers take no requests, and a revision's worker writes predictions from
                # its start: pinning an older one would let each new one write while it deploys.
                raise InvalidInput(
                    f"{namespace}/{name} is a realtime deployment: it runs its latest ready "
                    "revision; to go back, update it to the spec or model version wanted",
                    field="targets",
                )
            running = session.scalar(
                sa.select(RolloutRow.canary).where(
                    RolloutRow.deployment_id == row.id, RolloutRow.state.in_(ACTIVE_ROLLOUT)
                )
            )
            if running is not None:
                raise Conflict(
                    f"a rollout of revision {running} of {namespace}/{name} is under way and "
                    "owns the traffic: promote or roll it back first "
                    f"('modelyard deployments promote|rollback {namespace}/{name}')"
                )
            revisions = {r.number: r for r in self.revisions(session, row.id)}
            wanted = [(t.revision, "revision") for t in traffic.targets if t.revision is not None]
            if traffic.shadow is not None:
                wanted.append((traffic.shadow.revision, "shadow"))
            for number, field in wanted:
                was_ready(revisions, number, f"{namespace}/{name}", field)
            self.write_traffic(session, row, namespace, traffic, actor)
        return self.get(namespace, name)

    def write_traffic(
        self,
        session: Session,
        row: DeploymentRow,
        namespace: str,
        traffic: Traffic,
        actor: str | None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Store ``traffic`` (already checked) with its audit event, in the caller's
        transaction: rollouts move traffic in the same transaction as their own state."""
        row.traffic = traffic.model_dump(mode="json", exclude_none=True)
        row.updated_at = self.events.clock()
        self.events.append(
            session,
            EventType.DEPLOYMENT_TRAFFIC_CHANGED,
            f"{namespace}/{row.name}",
            {"traffic": row.traffic, **(data or {})},
            namespace=namespace,
            actor=actor,
        )

    def delete(self, namespace: str, name: str, actor: str | None = None) -> None:
        with self.db.write() as session:
            row = self.row(session, namespace, name, lock=True)
            for table in (RevisionRow, RolloutRow, SloAlertRow, TrafficMinuteRow):
                session.execute(sa.delete(table).where(table.deployment_id == row.id))
            session.delete(row)
            self.events.append(
                session,
                EventType.DEPLOYMENT_DELETED,
                f"{namespace}/{name}",
                namespace=namespace,
                actor=actor,
            )

    def follow(self, namespace: str, model: str, refs: set[str]) -> list[str]:
        """A model's ``latest`` or alias moved: give each deployment following one of ``refs`` a
        new revision if its version changed. Idempotent (events are delivered at least once).
        Returns the deployments that got a revision."""
        changed = []
        with self.db.write() as session:
            ns = session.scalar(sa.select(NamespaceRow).where(NamespaceRow.name == namespace))
            if ns is None:
                return []
            wanted = [f"{model}@{ref}" for ref in refs]
            rows = session.scalars(
                sa.select(DeploymentRow)
                .where(DeploymentRow.namespace_id == ns.id, DeploymentRow.model.in_(wanted))
                .with_for_update()
            ).all()
            for row in rows:
                spec = DeploymentSpec.model_validate(row.spec)
                try:
                    revision = self._new_revision(session, row, namespace, spec, "delivery")
                except NotFound:  # the alias was deleted: keep serving what runs
                    continue
                if revision is not None:
                    changed.append(f"{namespace}/{row.name}")
        return changed

    def _new_revision(
        self,
        session: Session,
        row: DeploymentRow,
        namespace: str,
        spec: DeploymentSpec,
        actor: str | None,
    ) -> RevisionRow | None:
        """A new revision when the resolved version or the spec differs from the latest one."""
        ref = spec.ref(namespace)
        version_id: str | None = None
        version_number = 0
        if ref is not None:
            version = version_row(
                session, artifact_row(session, "model", namespace, ref.name), ref.ref
            )
            version_id, version_number = version.id, version.number or 0
        latest = session.scalar(
            sa.select(RevisionRow)
            .where(RevisionRow.deployment_id == row.id)
            .order_by(RevisionRow.number.desc())
            .limit(1)
        )
        snapshot = spec.model_dump(mode="json")
        # Compared as validated again: a spec stored before a field was added has no key for it.
        same_spec = latest is not None and (
            DeploymentSpec.model_validate(latest.spec).model_dump(mode="json") == snapshot
        )
        if latest is not None and latest.version_id == version_id and same_spec:
            return None
        number = (latest.number if latest else 0) + 1
        revision = RevisionRow(
            id=uuid.uuid4().hex,
            deployment_id=row.id,
            number=number,
            version_id=version_id,
            version_number=version_number,
            spec=snapshot,
            state=RevisionState.DEPLOYING,
            created_by=actor,
            created_at=self.events.clock(),
            replica_token=new_token(),
            workload=spec.workload,
        )
        session.add(revision)
        self.events.append(
            session,
            EventType.REVISION_CREATED,
            f"{namespace}/{row.name}",
            {
                "revision": number,
                "model": f"{namespace}/{ref.name}@{version_number}" if ref else None,
            },
            namespace=namespace,
            actor=actor,
        )
        return revision

    def set_state(self, revision_id: str, state: RevisionState, reason: str | None = None) -> bool:
        """Move a revision to ``state`` (with an event); False when it was there already or is
        gone (deleted with its deployment)."""
        with self.db.write() as session:
            row = session.get(RevisionRow, revision_id, with_for_update=True)
            if row is None or row.state == state:
                return False
            deployment = session.get(DeploymentRow, row.deployment_id)
            assert deployment is not None
            namespace = session.get(NamespaceRow, deployment.namespace_id)
            assert namespace is not None
            now = self.events.clock()
            first_ready = state == RevisionState.READY and row.ready_at is None
            row.state, row.reason = state, reason
            if state == RevisionState.READY:
                row.ready_at, row.retired_at = row.ready_at or now, None
            elif state == RevisionState.RETIRED:
                row.retired_at = now
            if first_ready and self.on_ready is not None:
                self.on_ready(session, deployment, row, namespace.name)
            self.events.append(
                session,
                REVISION_EVENTS[state],
                f"{namespace.name}/{deployment.name}",
                {"revision": row.number, "model_version": row.version_number, "reason": reason},
                namespace=namespace.name,
            )
            return True

    # reads --------------------------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> DeploymentInfo:
        with self.db.read() as session:
            row = self.row(session, namespace, name)
            return self._info(session, row, namespace)

    def list_deployments(self, namespace: str) -> list[DeploymentInfo]:
        with self.db.read() as session:
            ns = namespace_row(session, namespace)
            rows = session.scalars(
                sa.select(DeploymentRow)
                .where(DeploymentRow.namespace_id == ns.id)
                .order_by(DeploymentRow.name)
            )
            return [self._info(session, row, namespace) for row in rows]

    def plans(self) -> list[Plan]:
        """What every deployment should run now; the serving controller reconciles towards it."""
        result = []
        with self.db.read() as session:
            for row, ns in session.execute(
                sa.select(DeploymentRow, NamespaceRow.name).join(
                    NamespaceRow, NamespaceRow.id == DeploymentRow.namespace_id
                )
            ):
                revisions = self.revisions(session, row.id)
                model = row.model.partition("@")[0]
                plain = {r.number: _revision(r, ns, row, model) for r in revisions}
                traffic = stored_traffic(row)
                routes = resolve_traffic(traffic.targets, revisions)
                shadow = traffic.shadow
                shadowed = (
                    shadow.revision
                    if shadow and shadow.revision in plain and shadow.revision not in routes
                    else None
                )
                latest = revisions[-1] if revisions else None
                deploying = (
                    plain[latest.number]
                    if latest and latest.state == RevisionState.DEPLOYING
                    else None
                )
                spec = DeploymentSpec.model_validate(row.spec)
                result.append(
                    Plan(
                        namespace=ns,
                        name=row.name,
                        routes=[
                            Route(plain[n], p, tuple(t)) for n, (p, t) in sorted(routes.items())
                        ],
                        deploying=deploying,
                        idle=[
                            plain[r.number]
                            for r in revisions
                            if r.number not in routes
                            and r.number != shadowed
                            and plain[r.number] is not deploying
                        ],
                        status=_status(self._revision_infos(row, revisions, routes), routes),
                        timeout_s=spec.timeout_s,
                        max_body_bytes=int(spec.max_body_mb * 1024 * 1024),
                        deployment_id=row.id,
                        sticky_header=traffic.sticky_header,
                        workload=spec.workload,
                        shadow=(
                            Route(plain[shadowed], shadow.percent, ())
                            if shadow and shadowed is not None
                            else None
                        ),
                    )
                )
        return result

    # plumbing -----------------------------------------------------------------------------------
    def row(
        self, session: Session, namespace: str, name: str, *, lock: bool = False
    ) -> DeploymentRow:
        ns = namespace_row(session, namespace)
        check_name(name, "deployment name")
        query = sa.select(DeploymentRow).where(
            DeploymentRow.namespace_id == ns.id, DeploymentRow.name == name
        )
        row = session.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise NotFound(
                f"deployment {namespace}/{name} does not exist: create it with "
                f"'modelyard deployments create {namespace}/{name} --model MODEL@REF'"
            )
        return row

    @staticmethod
    def revisions(session: Session, deployment_id: str) -> list[RevisionRow]:
        return list(
            session.scalars(
                sa.select(RevisionRow)
                .where(RevisionRow.deployment_id == deployment_id)
                .order_by(RevisionRow.number)
            )
        )

    def _info(self, session: Session, row: DeploymentRow, namespace: str) -> DeploymentInfo:
        revisions = self.revisions(session, row.id)
        traffic = stored_traffic(row)
        routes = resolve_traffic(traffic.targets, revisions)
        infos = self._revision_infos(row, revisions, routes)
        return DeploymentInfo(
            namespace=namespace,
            name=row.name,
            model=row.model,
            spec=DeploymentSpec.model_validate(row.spec),
            traffic=traffic.targets,
            sticky_header=traffic.sticky_header,
            shadow=traffic.shadow,
            rollout=RolloutStrategy.model_validate(row.rollout),
            revisions=infos,
            ready=bool(routes) and bool(infos) and infos[-1].state != RevisionState.DEPLOYING,
            status=_status(infos, routes),
            path=f"/{namespace}/{row.name}",
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @staticmethod
    def _revision_infos(
        row: DeploymentRow,
        revisions: list[RevisionRow],
        routes: dict[int, tuple[int, list[str]]],
    ) -> list[RevisionInfo]:
        return [
            RevisionInfo(
                id=r.id,
                number=r.number,
                name=revision_name(row.name, r.number),
                model_version=r.version_number,
                spec=DeploymentSpec.model_validate(r.spec),
                state=r.state,
                workload=Workload(r.workload),
                reason=r.reason,
                created_by=r.created_by,
                created_at=r.created_at,
                ready_at=r.ready_at,
                retired_at=r.retired_at,
                percent=routes.get(r.number, (0, []))[0],
                tags=routes.get(r.number, (0, []))[1],
            )
            for r in revisions
        ]


def _revision(row: RevisionRow, namespace: str, deployment: DeploymentRow, model: str) -> Revision:
    return Revision(
        id=row.id,
        number=row.number,
        name=revision_name(deployment.name, row.number),
        namespace=namespace,
        deployment=deployment.name,
        deployment_id=deployment.id,
        model=f"{namespace}/{model}@{row.version_number}" if row.version_id else "",
        spec=DeploymentSpec.model_validate(row.spec),
        state=row.state,
        workload=Workload(row.workload),
        token=row.replica_token,
    )


def _check_stream(
    session: Session, namespace_id: int, namespace: str, spec: DeploymentSpec
) -> None:
    """A realtime deployment reads a stream of its namespace, which must exist."""
    stream = spec.realtime.stream if spec.realtime else None
    if stream is not None and named_row(session, StreamRow, namespace_id, stream) is None:
        create = f"'modelyard streams create {namespace}/{stream}'"
        raise NotFound(f"stream {namespace}/{stream} does not exist: create it with {create}")


def _check_strategy(spec: dict[str, Any], strategy: RolloutStrategy, deployment: str) -> None:
    if spec.get("realtime") and strategy.strategy == "canary":
        raise InvalidInput(
            f"{deployment} is a realtime deployment: it takes no requests to split between "
            "revisions, so no canary; use 'shadow' (a new revision writes its predictions aside "
            "until promoted) or 'replace'",
            field="strategy",
        )


def _status(revisions: list[RevisionInfo], routes: dict[int, tuple[int, list[str]]]) -> str:
    """One sentence that says what the deployment is doing and, when it is stuck, why."""
    if not revisions:
        return "no revision"
    latest = revisions[-1]
    serving = ", ".join(f"revision {n} ({p}%)" for n, (p, _) in sorted(routes.items()))
    if latest.state in (RevisionState.FAILED, RevisionState.REJECTED):
        prefix = (
            f"revision {latest.number} (version {latest.model_version}) {latest.state}: "
            f"{latest.reason}"
        )
        return f"{prefix}; still serving {serving}" if serving else prefix
    if latest.state == RevisionState.DEPLOYING:
        waiting = f"revision {latest.number} (version {latest.model_version}) is starting"
        return f"{waiting}; serving {serving}" if serving else waiting
    return f"serving {serving}" if serving else "no ready revision"
