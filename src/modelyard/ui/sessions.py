"""Dashboard sessions: an API key pasted once, exchanged for a random session id.

The browser holds only the id (an HttpOnly, SameSite=Strict cookie); the key stays here, in the
control plane's memory, and every request authenticates it again through `KeyStore` (remembered
for a few seconds, forgotten the moment it is revoked), so a session of a revoked key ends on its
next request. Sessions do not survive a restart of the control plane: signing in again is the cost,
and no key is ever written to disk for the dashboard's sake.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

IDLE_SECONDS = 8 * 3600.0
"""A session unused this long expires."""
MAX_SECONDS = 24 * 3600.0
"""A session expires this long after sign-in, used or not."""
MAX_SESSIONS = 10_000


@dataclass
class Session:
    id: str
    token: str
    key_id: str
    csrf: str
    """The token every form of this session carries (compared in constant time)."""
    created: float
    last_used: float


class Sessions:
    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_seconds: float = MAX_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.monotonic = monotonic
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, token: str, key_id: str) -> Session:
        """A new session for an authenticated key (the oldest is dropped past ``MAX_SESSIONS``)."""
        now = self.monotonic()
        session = Session(
            id=secrets.token_urlsafe(32),
            token=token,
            key_id=key_id,
            csrf=secrets.token_urlsafe(32),
            created=now,
            last_used=now,
        )
        with self._lock:
            self._expire(now)
            self._sessions[session.id] = session
            while len(self._sessions) > MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of that id, its idle timer restarted; None if unknown or expired."""
        if not session_id:
            return None
        now = self.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[session_id]
                return None
            session.last_used = now
            return session

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.last_used > self.idle_seconds or now - session.created > self.max_seconds
        )

    def _expire(self, now: float) -> None:
        for session_id in [s.id for s in self._sessions.values() if self._expired(s, now)]:
            del self._sessions[session_id]
