"""Streams and realtime deployments as control-plane objects (metadata database, audit events).

The events themselves never pass through here: the gateway writes them to the event store
directly, and learns the streams from its routing table (`data_plane_table`).

A realtime deployment is a stream, a trigger rule, an inference function ``module:function(
history, model) -> value`` and an optional model reference (alias, ``latest`` or a number,
resolved by the worker and pinned per prediction). Changing the spec restarts its worker.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.errors import Conflict, NotFound
from modelyard.events.log import EventLog
from modelyard.events.types import EventType
from modelyard.realtime.records import RealtimeInfo, RealtimeSpec
from modelyard.realtime.streams import StreamInfo, StreamSpec
from modelyard.registry._lookup import named_row, namespace_row
from modelyard.store.schema import NamespaceRow, RealtimeDeploymentRow, StreamRow
from modelyard.types import check_name


class Catalog:
    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.db = events.db

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
                    sa.select(RealtimeDeploymentRow).where(
                        RealtimeDeploymentRow.namespace_id == row.namespace_id
                    )
                )
                if r.spec.get("stream") == name
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
        now = self.events.clock()
        with self.db.write() as session:
            ns = namespace_row(session, namespace)
            self._stream_row(session, namespace, spec.stream)
            if named_row(session, RealtimeDeploymentRow, ns.id, name) is not None:
                raise Conflict(
                    f"realtime deployment {namespace}/{name} exists: change it with "
                    f"'modelyard realtime update {namespace}/{name}'"
                )
            row = RealtimeDeploymentRow(
                id=uuid.uuid4().hex,
                namespace_id=ns.id,
                name=name,
                spec=spec.model_dump(mode="json"),
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            self.events.append(
                session,
                EventType.REALTIME_CREATED,
                f"{namespace}/{name}",
                {"spec": row.spec},
                namespace=namespace,
                actor=actor,
            )
            return _info(namespace, row)

    def update(
        self, namespace: str, name: str, changes: dict[str, Any], actor: str | None = None
    ) -> RealtimeInfo:
        with self.db.write() as session:
            row = self._row(session, namespace, name)
            spec = RealtimeSpec.model_validate({**row.spec, **changes})
            self._stream_row(session, namespace, spec.stream)
            row.spec, row.updated_at = spec.model_dump(mode="json"), self.events.clock()
            self.events.append(
                session,
                EventType.REALTIME_UPDATED,
                f"{namespace}/{name}",
                {"changes": sorted(changes)},
                namespace=namespace,
                actor=actor,
            )
            return _info(namespace, row)

    def get(self, namespace: str, name: str) -> RealtimeInfo:
        with self.db.read() as session:
            return _info(namespace, self._row(session, namespace, name))

    def list_deployments(self, namespace: str | None = None) -> list[RealtimeInfo]:
        """One namespace's realtime deployments, or every namespace's (None)."""
        with self.db.read() as session:
            query = sa.select(NamespaceRow.name, RealtimeDeploymentRow).join(
                NamespaceRow, NamespaceRow.id == RealtimeDeploymentRow.namespace_id
            )
            if namespace is not None:
                query = query.where(NamespaceRow.id == namespace_row(session, namespace).id)
            rows = session.execute(query.order_by(NamespaceRow.name, RealtimeDeploymentRow.name))
            return [_info(ns, row) for ns, row in rows]

    def delete(self, namespace: str, name: str, actor: str | None = None) -> None:
        with self.db.write() as session:
            session.delete(self._row(session, namespace, name))
            self.events.append(
                session,
                EventType.REALTIME_DELETED,
                f"{namespace}/{name}",
                namespace=namespace,
                actor=actor,
            )

    def _row(self, session: Session, namespace: str, name: str) -> RealtimeDeploymentRow:
        ns = namespace_row(session, namespace)
        row = named_row(session, RealtimeDeploymentRow, ns.id, name)
        if row is None:
            raise NotFound(
                f"realtime deployment {namespace}/{name} does not exist: create it with "
                f"'modelyard realtime create {namespace}/{name} --stream S --function M:F'"
            )
        return row

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
                    NamespaceRow.name, RealtimeDeploymentRow.name, RealtimeDeploymentRow.spec
                ).join(NamespaceRow, NamespaceRow.id == RealtimeDeploymentRow.namespace_id)
            )
            return {
                "streams": {f"{ns}/{name}": spec for ns, name, spec in streams},
                "deployments": {
                    f"{ns}/{name}": {"stream": spec["stream"]} for ns, name, spec in deployments
                },
            }


def _stream_info(namespace: str, row: StreamRow) -> StreamInfo:
    return StreamInfo(
        namespace=namespace,
        name=row.name,
        spec=StreamSpec.model_validate(row.spec),
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _info(namespace: str, row: RealtimeDeploymentRow) -> RealtimeInfo:
    return RealtimeInfo(
        namespace=namespace,
        name=row.name,
        spec=RealtimeSpec.model_validate(row.spec),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
