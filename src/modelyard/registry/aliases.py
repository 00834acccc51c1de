"""Aliases: movable names for one version, moved in one transaction, with their history kept."""

from __future__ import annotations

import sqlalchemy as sa

from modelyard.errors import NotFound
from modelyard.events.log import EventLog
from modelyard.events.types import ALIAS_DELETED, ALIAS_MOVED
from modelyard.registry._lookup import artifact_row, version_row
from modelyard.registry.records import AliasChange
from modelyard.store.schema import AliasHistoryRow, AliasRow, VersionRow
from modelyard.types import ArtifactKind, check_alias


class Aliases:
    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.db = events.db

    def set(
        self,
        kind: ArtifactKind,
        namespace: str,
        name: str,
        alias: str,
        version: int,
        actor: str | None = None,
    ) -> AliasChange:
        """Point ``alias`` at committed ``version``; readers see the old or the new, never none."""
        check_alias(alias)
        with self.db.write() as session:
            artifact = artifact_row(session, kind, namespace, name, lock=True)
            target = version_row(session, artifact, version)
            row = session.get(AliasRow, (artifact.id, alias))
            previous = session.get(VersionRow, row.version_id).number if row else None  # type: ignore[union-attr]
            now = self.events.clock()
            if row is None:
                session.add(
                    AliasRow(
                        artifact_id=artifact.id,
                        name=alias,
                        version_id=target.id,
                        updated_by=actor,
                        updated_at=now,
                    )
                )
            else:
                row.version_id, row.updated_by, row.updated_at = target.id, actor, now
            return self._record(
                session, artifact.id, kind, namespace, name, alias, target.number, previous, actor
            )

    def delete(
        self, kind: ArtifactKind, namespace: str, name: str, alias: str, actor: str | None = None
    ) -> AliasChange:
        check_alias(alias)
        with self.db.write() as session:
            artifact = artifact_row(session, kind, namespace, name, lock=True)
            row = session.get(AliasRow, (artifact.id, alias))
            if row is None:
                raise NotFound(f"{kind} {namespace}/{name} has no alias {alias!r}")
            previous = session.get(VersionRow, row.version_id).number  # type: ignore[union-attr]
            session.delete(row)
            return self._record(
                session, artifact.id, kind, namespace, name, alias, None, previous, actor
            )

    def history(
        self, kind: ArtifactKind, namespace: str, name: str, alias: str | None = None
    ) -> list[AliasChange]:
        with self.db.read() as session:
            artifact = artifact_row(session, kind, namespace, name)
            query = (
                sa.select(AliasHistoryRow)
                .where(AliasHistoryRow.artifact_id == artifact.id)
                .order_by(AliasHistoryRow.id)
            )
            if alias is not None:
                query = query.where(AliasHistoryRow.alias == check_alias(alias))
            return [
                AliasChange(
                    alias=r.alias,
                    version=r.version_number,
                    previous=r.previous_number,
                    actor=r.actor,
                    at=r.at,
                )
                for r in session.scalars(query)
            ]

    def _record(
        self,
        session: sa.orm.Session,
        artifact_id: int,
        kind: ArtifactKind,
        namespace: str,
        name: str,
        alias: str,
        version: int | None,
        previous: int | None,
        actor: str | None,
    ) -> AliasChange:
        now = self.events.clock()
        session.add(
            AliasHistoryRow(
                artifact_id=artifact_id,
                alias=alias,
                version_number=version,
                previous_number=previous,
                actor=actor,
                at=now,
            )
        )
        self.events.append(
            session,
            (ALIAS_MOVED if version is not None else ALIAS_DELETED)[kind],
            f"{namespace}/{name}@{alias}",
            {
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "alias": alias,
                "version": version,
                "previous": previous,
            },
            namespace=namespace,
            actor=actor,
        )
        return AliasChange(alias=alias, version=version, previous=previous, actor=actor, at=now)
