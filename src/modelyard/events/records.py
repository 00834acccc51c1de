"""What the event log hands out: events and webhook subscriptions, as records.

Pydantic records only, shared by the services (`log`, `webhooks`), the API and the SDK, which
imports them without loading the database layer.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from modelyard.types import Record

if TYPE_CHECKING:
    from modelyard.store.schema import EventRow


class Event(Record):
    id: int
    type: str
    namespace: str | None
    subject: str
    data: dict[str, Any]
    actor: str | None
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: EventRow) -> Event:
        return cls(
            id=row.id,
            type=row.type,
            namespace=row.namespace,
            subject=row.subject,
            data=dict(row.data),
            actor=row.actor,
            created_at=row.created_at,
        )


class Webhook(Record):
    id: str
    namespace: str
    url: str
    events: list[str]
    created_at: dt.datetime
