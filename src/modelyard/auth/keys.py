"""API keys: random, shown once, stored as a SHA-256 hash, with roles per namespace.

A key reads ``my_<id>_<secret>``. The id is public (it names the key in lists and audit records);
the secret's hash is all the database keeps. Secrets are 256 random bits, so a plain hash is enough
(slow password hashes are for guessable secrets).

Every API request authenticates, so a key found valid is remembered for a few seconds
(``CACHE_SECONDS``) instead of read again. That is correct because the control plane is the single
writer of keys: ``create`` and ``revoke`` drop the remembered entry the moment their transaction
commits, so a revoked key gets 401 on its next request.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.auth.records import KeyInfo
from modelyard.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from modelyard.events.log import EventLog
from modelyard.events.types import EventType
from modelyard.store.db import after_commit
from modelyard.store.schema import ApiKeyRow, KeyRoleRow, NamespaceRow
from modelyard.types import Role, check_name

PREFIX = "my"
CACHE_SECONDS = 5.0
CACHE_ENTRIES = 10_000


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's id and what it may do where."""

    key_id: str
    name: str
    admin: bool = False
    roles: dict[str, Role] = field(default_factory=dict)

    def can(self, namespace: str, needed: Role) -> bool:
        if self.admin:
            return True
        role = self.roles.get(namespace)
        return role is not None and role.allows(needed)

    def require(self, namespace: str, needed: Role) -> None:
        """Raise 403 unless allowed. The message is the same whether or not the namespace exists,
        so a key learns nothing about namespaces it has no role in."""
        if not self.can(namespace, needed):
            # Suggested from the key's own namespaces only: it learns no other name.
            close = difflib.get_close_matches(namespace, [*self.roles], n=1)
            hint = f"did you mean {close[0]!r}?" if close and close[0] != namespace else None
            raise Forbidden(
                f"key {self.key_id} has no {needed.value} role in namespace {namespace!r}: "
                + (hint or "ask an admin of that namespace for one")
            )

    def visible_namespaces(self) -> list[str] | None:
        """Namespaces this key may read; None means all (admin)."""
        if self.admin:
            return None
        return [ns for ns, role in self.roles.items() if role.allows(Role.VIEWER)]


def _parse(token: str | None) -> tuple[str, str]:
    """A token's key id and the hash of its secret."""
    if not token:
        raise Unauthenticated(
            "no API key: send 'Authorization: Bearer <key>' (the CLI reads MODELYARD_API_KEY)"
        )
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not key_id or not secret:
        raise Unauthenticated("malformed API key: keys look like my_<id>_<secret>")
    return key_id, _hash(secret)


def principal_of(session: Session, key: ApiKeyRow) -> Principal:
    """The caller a stored key stands for: its name, admin flag and role per namespace."""
    roles = {
        ns: Role(role)
        for ns, role in session.execute(
            sa.select(NamespaceRow.name, KeyRoleRow.role)
            .join(NamespaceRow, NamespaceRow.id == KeyRoleRow.namespace_id)
            .where(KeyRoleRow.key_id == key.id)
        )
    }
    return Principal(key.id, key.name, key.is_admin, roles)


def _copy(principal: Principal) -> Principal:
    """Each request gets its own Principal: the remembered one is never handed out."""
    return Principal(principal.key_id, principal.name, principal.admin, dict(principal.roles))


@dataclass(frozen=True)
class _Remembered:
    secret_hash: str
    principal: Principal
    expires: float
    """Monotonic time it is forgotten: ``CACHE_SECONDS`` on, or the key's own expiry if sooner."""


class KeyStore:
    def __init__(
        self,
        events: EventLog,
        *,
        cache_seconds: float = CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.db = events.db
        self.cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._remembered: dict[str, _Remembered] = {}
        # Bumped by every change of a key: a lookup that began before the change must not store
        # what it read, which may predate the change.
        self._generation = 0
        self._lock = threading.Lock()

    def create(
        self,
        name: str,
        roles: dict[str, Role] | None = None,
        *,
        admin: bool = False,
        by: Principal | None = None,
        expires_at: dt.datetime | None = None,
    ) -> tuple[KeyInfo, str]:
        """Create a key; returns it and the token, which is shown only this once.

        A namespace admin may create keys for the namespaces it administers; only a global admin
        may create global admin keys. From ``expires_at`` on, the API and the gateway refuse it.
        """
        check_name(name, "key name")
        roles = dict(roles or {})
        if by is not None:
            if admin and not by.admin:
                raise Forbidden("only a global admin key can create another global admin key")
            for namespace in roles:
                by.require(namespace, Role.ADMIN)
        if not admin and not roles:
            raise InvalidInput("give the key a role in at least one namespace, or make it admin")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = self.events.clock()
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidInput("give the expiry with a time zone (UTC: ...Z or +00:00)")
            if expires_at <= now:
                raise InvalidInput(
                    f"the key would expire at {expires_at.isoformat()}, which has passed: "
                    "give a time in the future"
                )
        with self.db.write() as session:
            ids = self._namespace_ids(session, list(roles))
            session.add(
                ApiKeyRow(
                    id=key_id,
                    name=name,
                    secret_hash=_hash(secret),
                    is_admin=admin,
                    created_by=by.key_id if by else None,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            session.flush()
            for namespace, role in roles.items():
                session.add(KeyRoleRow(key_id=key_id, namespace_id=ids[namespace], role=role.value))
            after_commit(session, lambda: self._forget(key_id))
            self.events.append(
                session,
                EventType.KEY_CREATED,
                f"keys/{key_id}",
                {
                    "name": name,
                    "admin": admin,
                    "roles": {ns: r.value for ns, r in roles.items()},
                    "expires_at": expires_at.isoformat() if expires_at else None,
                },
                actor=by.key_id if by else None,
            )
        info = KeyInfo(
            id=key_id,
            name=name,
            admin=admin,
            roles=roles,
            created_at=now,
            revoked_at=None,
            expires_at=expires_at,
        )
        return info, f"{PREFIX}_{key_id}_{secret}"

    def authenticate(self, token: str | None) -> Principal:
        key_id, secret_hash = _parse(token)
        now = self._monotonic()
        with self._lock:
            generation = self._generation
        found = self._recall(key_id, secret_hash, now)
        if found is not None:
            return found
        with self.db.read() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None or not hmac.compare_digest(row.secret_hash, secret_hash):
                raise Unauthenticated("unknown API key: check it, or ask an admin for a new one")
            if row.revoked_at is not None:
                raise Unauthenticated(f"API key {key_id} was revoked: ask an admin for a new one")
            wall = self.events.clock()
            if row.expires_at is not None and wall >= row.expires_at:
                raise Unauthenticated(
                    f"API key {key_id} expired at {row.expires_at:%Y-%m-%d %H:%M:%S} UTC: "
                    "ask an admin for a new one"
                )
            lifetime = (row.expires_at - wall).total_seconds() if row.expires_at else None
            principal = principal_of(session, row)
            stored_hash = row.secret_hash
        self._remember(key_id, stored_hash, principal, generation, now, lifetime)
        return _copy(principal)

    def recall(self, token: str | None) -> Principal | None:
        """The caller of a key found valid a moment ago, without touching the database; None
        when it must be looked up (``authenticate``). Raises 401 for a missing or malformed key."""
        key_id, secret_hash = _parse(token)
        return self._recall(key_id, secret_hash, self._monotonic())

    def _recall(self, key_id: str, secret_hash: str, now: float) -> Principal | None:
        with self._lock:
            remembered = self._remembered.get(key_id)
        if (
            remembered is None
            or now >= remembered.expires
            or not hmac.compare_digest(remembered.secret_hash, secret_hash)
        ):
            return None
        return _copy(remembered.principal)

    def list_keys(self, by: Principal) -> list[KeyInfo]:
        """Admins see every key; others see keys holding roles only in namespaces they admin."""
        with self.db.read() as session:
            rows = session.scalars(sa.select(ApiKeyRow).order_by(ApiKeyRow.created_at)).all()
            infos = [self._info(session, row) for row in rows]
        if by.admin:
            return infos
        return [
            k
            for k in infos
            if not k.admin and k.roles and all(by.can(ns, Role.ADMIN) for ns in k.roles)
        ]

    def revoke(self, key: str, by: Principal) -> KeyInfo:
        """Revoke a key given by its id or by its name, when one live key has that name."""
        key_id = key
        try:
            with self.db.write() as session:
                row = session.get(ApiKeyRow, key) or self._by_name(session, key, by)
                key_id = row.id if row else key
                if row is None or not (by.admin or self._administers(session, row, by)):
                    raise NotFound(f"key {key!r} does not exist or is not yours to revoke")
                if row.revoked_at is not None:
                    raise Conflict(f"key {key_id} is already revoked")
                row.revoked_at = self.events.clock()
                self.events.append(
                    session, EventType.KEY_REVOKED, f"keys/{key_id}", actor=by.key_id
                )
                return self._info(session, row)
        finally:
            # Whatever the outcome (even a commit whose result is unknown), the next request
            # with this key reads the database again.
            self._forget(key_id)

    def _by_name(self, session: sa.orm.Session, name: str, by: Principal) -> ApiKeyRow | None:
        """The one live key named ``name`` that ``by`` may see; None when there is none."""
        rows = session.scalars(
            sa.select(ApiKeyRow).where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None))
        ).all()
        visible = [r for r in rows if by.admin or self._administers(session, r, by)]
        if len(visible) > 1:
            raise InvalidInput(
                f"{len(visible)} keys are named {name!r} "
                f"({', '.join(r.id for r in visible)}): give the id of the one to revoke"
            )
        return visible[0] if visible else None

    def _administers(self, session: sa.orm.Session, row: ApiKeyRow, by: Principal) -> bool:
        """A namespace admin manages the keys whose every role is in namespaces it admins."""
        info = self._info(session, row)
        return (
            not info.admin and bool(info.roles) and all(by.can(ns, Role.ADMIN) for ns in info.roles)
        )

    def data_plane_table(self) -> dict[str, dict[str, object]]:
        """Every live key as the gateway checks it without the database: id -> secret hash, admin
        flag, roles by namespace name and expiry (Unix seconds, or None). Hashes of 256-bit
        secrets: no use to a reader."""
        with self.db.read() as session:
            keys: dict[str, dict[str, object]] = {
                row.id: {
                    "hash": row.secret_hash,
                    "admin": row.is_admin,
                    "roles": {},
                    "expires": row.expires_at.timestamp() if row.expires_at else None,
                }
                for row in session.scalars(
                    sa.select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))
                )
            }
            for key_id, namespace, role in session.execute(
                sa.select(KeyRoleRow.key_id, NamespaceRow.name, KeyRoleRow.role).join(
                    NamespaceRow, NamespaceRow.id == KeyRoleRow.namespace_id
                )
            ):
                if key_id in keys:
                    roles = keys[key_id]["roles"]
                    assert isinstance(roles, dict)
                    roles[namespace] = role
        return keys

    def count(self) -> int:
        with self.db.read() as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(ApiKeyRow)) or 0)

    def _remember(
        self,
        key_id: str,
        secret_hash: str,
        principal: Principal,
        generation: int,
        now: float,
        lifetime: float | None = None,
    ) -> None:
        """Remember a key found valid; ``lifetime``: seconds until the key itself expires."""
        if self.cache_seconds <= 0:
            return
        until = now + min(self.cache_seconds, lifetime if lifetime is not None else math.inf)
        with self._lock:
            if generation != self._generation:
                return  # a key changed while this lookup read the database
            if len(self._remembered) >= CACHE_ENTRIES:
                self._remembered = {k: v for k, v in self._remembered.items() if v.expires > now}
                if len(self._remembered) >= CACHE_ENTRIES:
                    self._remembered.clear()
            self._remembered[key_id] = _Remembered(secret_hash, principal, until)

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._remembered.pop(key_id, None)

    @staticmethod
    def _namespace_ids(session: sa.orm.Session, names: list[str]) -> dict[str, int]:
        found = dict(
            session.execute(
                sa.select(NamespaceRow.name, NamespaceRow.id).where(NamespaceRow.name.in_(names))
            ).all()
        )
        missing: list[str] = sorted(set(names) - set(found))
        if missing:
            raise NotFound(f"namespace {missing[0]!r} does not exist: create it first")
        return found

    @staticmethod
    def _info(session: sa.orm.Session, row: ApiKeyRow) -> KeyInfo:
        return KeyInfo(
            id=row.id,
            name=row.name,
            admin=row.is_admin,
            roles=principal_of(session, row).roles,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            expires_at=row.expires_at,
        )
