"""Dashboard sessions: an API key pasted once, exchanged for a random session token.

The browser holds only the token (an HttpOnly, SameSite=Strict cookie); the database keeps its
SHA-256 hash (never the token, never the key), the id of the key it was made from, its CSRF token
and its times, so sessions survive a restart of the control plane. Every request reads the session
and its key together: a key revoked or expired ends all its sessions on their next request (they
are deleted then), whichever control plane process revoked it. Sign-out deletes the session; expired
ones are deleted when met and at each sign-in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from modelyard.auth.keys import Principal, principal_of
from modelyard.store.db import Database
from modelyard.store.schema import ApiKeyRow, UiSessionRow

IDLE_SECONDS = 8 * 3600.0
"""A session unused this long expires."""
MAX_SECONDS = 24 * 3600.0
"""A session expires this long after sign-in, used or not."""
TOUCH_SECONDS = 60.0
"""A session's last use is written at most this often (its idle expiry is that much coarse), so
reading a page costs no write."""
MAX_SESSIONS = 10_000


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    id: str
    """The hash of the token: what the database knows it by."""
    key_id: str
    csrf: str
    """The token every form of this session carries (compared in constant time)."""
    created: dt.datetime
    last_seen: dt.datetime
    expires: dt.datetime


def _session(row: UiSessionRow) -> Session:
    return Session(
        row.token_hash, row.key_id, row.csrf, row.created_at, row.last_seen_at, row.expires_at
    )


class Sessions:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], dt.datetime],
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        self.db = db
        self.clock = clock
        self.idle = dt.timedelta(seconds=idle_seconds)
        self.max = dt.timedelta(seconds=max_seconds)

    def open(self, key_id: str) -> tuple[str, Session]:
        """A new session of an authenticated key, and its token (for the cookie: the only copy).
        Expired sessions are deleted, and the oldest ones past ``MAX_SESSIONS``."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        row = UiSessionRow(
            token_hash=_hash(token),
            key_id=key_id,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=min(now + self.idle, now + self.max),
        )
        with self.db.write() as session:
            session.execute(sa.delete(UiSessionRow).where(UiSessionRow.expires_at <= now))
            session.add(row)
            session.flush()
            count = session.scalar(sa.select(sa.func.count()).select_from(UiSessionRow)) or 0
            if count > MAX_SESSIONS:
                oldest = (
                    sa.select(UiSessionRow.token_hash)
                    .order_by(UiSessionRow.last_seen_at)
                    .limit(count - MAX_SESSIONS)
                )
                session.execute(
                    sa.delete(UiSessionRow).where(
                        UiSessionRow.token_hash.in_(oldest.scalar_subquery())
                    )
                )
            found = _session(row)
        return token, found

    def get(self, token: str | None) -> tuple[Session, Principal] | None:
        """The live session of that token and its key's principal, read now; None if the token
        is unknown, the session expired, or its key was revoked or expired (then every session
        of that key is deleted)."""
        if not token:
            return None
        now = self.clock()
        ended: str | None = None
        with self.db.read() as session:
            found = session.execute(
                sa.select(UiSessionRow, ApiKeyRow)
                .join(ApiKeyRow, ApiKeyRow.id == UiSessionRow.key_id)
                .where(UiSessionRow.token_hash == _hash(token))
            ).one_or_none()
            if found is None:
                return None
            row, key = found
            live = _session(row)
            if key.revoked_at is not None or (key.expires_at is not None and now >= key.expires_at):
                ended = "key"
            elif now >= row.expires_at:
                ended = "session"
            else:
                principal = principal_of(session, key)
        if ended == "key":
            self.end_key(live.key_id)
            return None
        if ended == "session":
            self.close(live.id)
            return None
        if now - live.last_seen >= dt.timedelta(seconds=TOUCH_SECONDS):
            live = self._touch(live, now)
        return live, principal

    def _touch(self, live: Session, now: dt.datetime) -> Session:
        expires = min(now + self.idle, live.created + self.max)
        with self.db.write() as session:
            session.execute(
                sa.update(UiSessionRow)
                .where(UiSessionRow.token_hash == live.id)
                .values(last_seen_at=now, expires_at=expires)
            )
        return Session(live.id, live.key_id, live.csrf, live.created, now, expires)

    def close(self, session_id: str) -> None:
        """Sign-out: the session (by its id, the token's hash) is deleted."""
        with self.db.write() as session:
            session.execute(sa.delete(UiSessionRow).where(UiSessionRow.token_hash == session_id))

    def end_key(self, key_id: str) -> None:
        """Every session of that key ends."""
        with self.db.write() as session:
            session.execute(sa.delete(UiSessionRow).where(UiSessionRow.key_id == key_id))

    def __len__(self) -> int:
        with self.db.read() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(UiSessionRow)) or 0
