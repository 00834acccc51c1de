"""What the key store hands out: an API key's record (never its secret).

A pydantic record shared by the service (`keys`), the API and the SDK, which imports it without
loading the database layer.
"""

from __future__ import annotations

import datetime as dt

from modelyard.types import Record, Role


class KeyInfo(Record):
    id: str
    name: str
    admin: bool
    roles: dict[str, Role]
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    expires_at: dt.datetime | None = None
