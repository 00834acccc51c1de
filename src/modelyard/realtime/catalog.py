"""Streams and realtime deployments as control-plane objects (metadata database, audit events).

The events themselves never pass through here: the gateway writes them to the event store
directly, and learns the streams from its routing table (`data_plane_table`).

A realtime deployment is a stream, a trigger rule, an inference function ``module:function(
history, model) -> value`` and an optional model reference (alias, ``latest`` or a number). It is
a deployment (`modelyard.serving.deployments`) with a ``realtime`` section: each change of the
spec, and each move of the followed alias or ``latest``, makes a revision pinning one version,
whose worker replaces the running one. The methods here are the realtime API's view of them.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.errors import Conflict, Forbidden, NotFound
from modelyard.events.log import EventLog
from modelyard.events.types import EventType
from modelyard.realtime.emitter import PredictionEvent
from modelyard.realtime.records import RealtimeInfo, RealtimeSpec
from modelyard.realtime.streams import StreamInfo, StreamSpec
from modelyard.registry._lookup import named_row, namespace_row
from modelyard.serving.deployments import Deployments
from modelyard.serving.records import DeploymentInfo, DeploymentSpec, SpecPatch
from modelyard.serving.states import ReplicaState, RevisionState
from modelyard.store.schema import DeploymentRow, NamespaceRow, RevisionRow, StreamRow
from modelyard.types import check_name


class Catalog:
    def __init__(self, events: EventLog, deployments: Deployments) -> None:
        self.events = events
        self.db = events.db
        self.deployments = deployments

    # streams ------------------------------------------------------------------------------------
    def create_stream(
        self, namespace: str, name: str, spec: StreamSpec, actor: str | None = None
    ) -> StreamInfo:
        check_name(name, "stream name")
        with self.db.write() as session:
            ns = namespace_row(session, namespace)
            if named_row(session, StreamRow, ns.id, name) is not None:
                raise Conflict(f"stream {namespace}/{name} exists: delete it first to change it")
            row = StreamRow(
                id=uuid.uuid4().hex,
                namespace_id=ns.id,
                name=name,
                spec=spec.model_dump(mode="json"),
                created_by=actor,
                created_at=self.events.clock(),
            )
            session.add(row)
            self.events.append(
                session,
                EventType.STREAM_CREATED,
                f"{namespace}/{name}",
                {"spec": row.spec},
                namespace=namespace,
                actor=actor,
            )
            return _stream_info(namespace, row)

    def get_stream(self, namespace: str, name: str) -> StreamInfo:
        with self.db.read() as session:
            return _stream_info(namespace, self._stream_row(session, namespace, name))

    def list_streams(self, namespace: str) -> list[StreamInfo]:
        with self.db.read() as session:
            ns = namespace_row(session, namespace)
            rows = session.scalars(
                sa.select(StreamRow).where(StreamRow.namespace_id == ns.id).order_by(StreamRow.name)
            )
            return [_stream_info(namespace, row) for row in rows]

    def delete_stream(self, namespace: str, name: str, actor: str | None = None) -> None:
        with self.db.write() as session:
            row = self._stream_row(session, namespace, name)
            users = [
                r.name
                for r in session.scalars(
                    sa.select(DeploymentRow).where(DeploymentRow.namespace_id == row.namespace_id)
                )
                if (r.spec.get("realtime") or {}).get("stream") == name
            ]
            if users:
                raise Conflict(
                    f"stream {namespace}/{name} feeds realtime deployments {', '.join(users)}: "
                    "delete them first"
                )
            session.delete(row)
            self.events.append(
                session,
                EventType.STREAM_DELETED,
                f"{namespace}/{name}",
                namespace=namespace,
                actor=actor,
            )

    def _stream_row(self, session: Session, namespace: str, name: str) -> StreamRow:
        ns = namespace_row(session, namespace)
        row = named_row(session, StreamRow, ns.id, name)
        if row is None:
            raise NotFound(
                f"stream {namespace}/{name} does not exist: create it with "
                f"'modelyard streams create {namespace}/{name}'"
            )
        return row

    # realtime deployments -----------------------------------------------------------------------
    def create(
        self, namespace: str, name: str, spec: RealtimeSpec, actor: str | None = None
    ) -> RealtimeInfo:
        check_name(name, "realtime deployment name")
        deployment = DeploymentSpec(model=spec.model, realtime=spec.workload(), env=spec.env)
        return realtime_info(self.deployments.create(namespace, name, deployment, actor))

    def update(
        self, namespace: str, name: str, changes: dict[str, Any], actor: str | None = None
    ) -> RealtimeInfo:
        """Change fields of the spec: a new revision, whose worker replaces the running one."""
        current = self.get(namespace, name).spec
        spec = RealtimeSpec.model_validate({**current.model_dump(), **changes})
        patch = SpecPatch(model=spec.model, realtime=spec.workload(), env=spec.env)
        return realtime_info(self.deployments.update(namespace, name, patch, actor))

    def get(self, namespace: str, name: str) -> RealtimeInfo:
        return realtime_info(self.deployment(namespace, name))

    def deployment(self, namespace: str, name: str) -> DeploymentInfo:
        """The realtime deployment ``namespace/name`` as the deployment it is."""
        try:
            info = self.deployments.get(namespace, name)
        except NotFound:
            info = None
        if info is None or info.spec.realtime is None:
            raise NotFound(
                f"realtime deployment {namespace}/{name} does not exist: create it with "
                f"'modelyard realtime create {namespace}/{name} --stream S --function M:F'"
            )
        return info

    def list_deployments(self, namespace: str) -> list[RealtimeInfo]:
        return [realtime_info(info) for info in self.realtime_deployments(namespace)]

    def realtime_deployments(self, namespace: str) -> list[DeploymentInfo]:
        """The namespace's realtime deployments, as the deployments they are."""
        found = self.deployments.list_deployments(namespace)
        return [info for info in found if info.spec.realtime is not None]

    def delete(self, namespace: str, name: str, actor: str | None = None) -> None:
        self.deployment(namespace, name)
        self.deployments.delete(namespace, name, actor)

    def append_predictions(
        self, namespace: str, name: str, token: str, predictions: list[PredictionEvent]
    ) -> int:
        """Append a ``realtime.prediction`` event per prediction, in one transaction, for the
        worker of the revision whose replica token is ``token`` (`modelyard.realtime.emitter`)."""
        key = f"{namespace}/{name}"
        with self.db.write() as session:
            revision = self._worker_revision(session, namespace, name, token)
            for prediction in predictions:
                if prediction.deployment != key:
                    raise Conflict(
                        f"a prediction of {prediction.deployment} sent as one of {key}: "
                        "nothing was appended",
                        field="deployment",
                    )
                self.events.append(
                    session,
                    EventType.REALTIME_PREDICTION,
                    key,
                    {**prediction.data(), "revision": revision.number},
                    namespace=namespace,
                )
            return len(predictions)

    def worker_revision(self, namespace: str, name: str, token: str) -> int:
        """The number of the revision of ``namespace/name`` whose replica token is ``token``:
        what proves a request comes from one of its workers; 403 for any other token."""
        with self.db.read() as session:
            return self._worker_revision(session, namespace, name, token).number

    def _worker_revision(
        self, session: Session, namespace: str, name: str, token: str
    ) -> RevisionRow:
        row = named_row(session, DeploymentRow, namespace_row(session, namespace).id, name)
        if row is None or not row.spec.get("realtime"):
            self.deployment(namespace, name)  # raises NotFound with the way out
        assert row is not None
        revisions = session.scalars(
            sa.select(RevisionRow).where(RevisionRow.deployment_id == row.id)
        )
        for revision in revisions:
            if token and hmac.compare_digest(revision.replica_token, token):
                return revision
        raise Forbidden(
            f"only a worker of {namespace}/{name} sends this: the request lacks its revision's "
            "replica token"
        )

    # the gateway's part -------------------------------------------------------------------------
    def data_plane_table(self) -> dict[str, Any]:
        """Streams (their specs) and realtime deployments (their streams) by ``namespace/name``:
        what the gateway needs to ingest, answer reads and apply backpressure."""
        with self.db.read() as session:
            streams = session.execute(
                sa.select(NamespaceRow.name, StreamRow.name, StreamRow.spec).join(
                    NamespaceRow, NamespaceRow.id == StreamRow.namespace_id
                )
            )
            deployments = session.execute(
                sa.select(
                    NamespaceRow.name, DeploymentRow.name, DeploymentRow.spec, DeploymentRow.traffic
                ).join(NamespaceRow, NamespaceRow.id == DeploymentRow.namespace_id)
            )
            return {
                "streams": {f"{ns}/{name}": spec for ns, name, spec in streams},
                "deployments": {
                    f"{ns}/{name}": {
                        "stream": spec["realtime"]["stream"],
                        "shadow": (traffic.get("shadow") or {}).get("revision")
                        if isinstance(traffic, dict)
                        else None,
                    }
                    for ns, name, spec, traffic in deployments
                    if spec.get("realtime")
                },
            }


def realtime_info(info: DeploymentInfo) -> RealtimeInfo:
    """A realtime deployment as the realtime API shows it; ``status`` says whether its worker
    runs when ``info`` has its replicas (`modelyard.serving.controller.ServingController.describe`).
    """
    assert info.spec.realtime is not None, "a realtime deployment"
    spec = RealtimeSpec.model_validate(
        {**info.spec.realtime.model_dump(), "model": info.spec.model, "env": info.spec.env}
    )
    running = [r for r in info.revisions if r.percent > 0]
    current = running[-1] if running else (info.revisions[-1] if info.revisions else None)
    ready = [r for r in current.replicas if r.state == ReplicaState.READY] if current else []
    if ready:
        status = f"running (pid {ready[0].pid})" if ready[0].pid else "running"
        latest = info.revisions[-1]
        if latest.state == RevisionState.DEPLOYING and latest is not current:
            status += f"; revision {latest.number} is starting"
        if info.shadow is not None:
            status += f"; revision {info.shadow.revision} runs as its shadow"
    else:
        status = info.status
    return RealtimeInfo(
        namespace=info.namespace,
        name=info.name,
        spec=spec,
        created_by=info.created_by,
        created_at=info.created_at,
        updated_at=info.updated_at,
        status=status,
        revision=current.number if current else 0,
    )


def _stream_info(namespace: str, row: StreamRow) -> StreamInfo:
    return StreamInfo(
        namespace=namespace,
        name=row.name,
        spec=StreamSpec.model_validate(row.spec),
        created_at=row.created_at,
        created_by=row.created_by,
    )
