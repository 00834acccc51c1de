"""Namespaces: a team's isolated space. Every model, dataset and key role lives in one."""

from __future__ import annotations

import sqlalchemy as sa

from modelyard.errors import Conflict, InvalidInput
from modelyard.events.log import EventLog
from modelyard.events.types import EventType
from modelyard.registry._lookup import namespace_info, namespace_row
from modelyard.registry.records import NamespaceInfo
from modelyard.store.schema import NamespaceRow
from modelyard.types import check_name, check_text

MAX_DESCRIPTION = 2000


class Namespaces:
    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.db = events.db

    def create(self, name: str, description: str = "", actor: str | None = None) -> NamespaceInfo:
        check_name(name, "namespace")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidInput(f"description is over {MAX_DESCRIPTION} characters")
        check_text(description, "description")
        with self.db.write() as session:
            if session.scalar(sa.select(NamespaceRow.id).where(NamespaceRow.name == name)):
                raise Conflict(f"namespace {name!r} already exists")
            row = NamespaceRow(name=name, description=description, created_at=self.events.clock())
            session.add(row)
            self.events.append(
                session, EventType.NAMESPACE_CREATED, name, namespace=name, actor=actor
            )
            return namespace_info(row)

    def get(self, name: str) -> NamespaceInfo:
        with self.db.read() as session:
            return namespace_info(namespace_row(session, name))

    def list(self, only: list[str] | None = None) -> list[NamespaceInfo]:
        """All namespaces, or those named in ``only`` (the ones a key may see)."""
        query = sa.select(NamespaceRow).order_by(NamespaceRow.name)
        if only is not None:
            query = query.where(NamespaceRow.name.in_(only))
        with self.db.read() as session:
            return [namespace_info(r) for r in session.scalars(query)]
