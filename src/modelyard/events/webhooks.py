"""Webhooks: events fanned out into a delivery outbox, drained by a worker with backoff.

The writer only appends to the event log. A durable consumer turns each event into one delivery
row per matching webhook (idempotent thanks to a unique key), and a worker thread posts due
deliveries, HMAC-SHA256 signed like GitHub's ``X-Hub-Signature-256``, retrying failures with
exponential backoff. A slow or dead endpoint delays only its own deliveries.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from modelyard.errors import InvalidInput, NotFound
from modelyard.events.consumers import DurableConsumer
from modelyard.events.log import EventLog, matches
from modelyard.events.records import Event, Webhook
from modelyard.events.types import EventType
from modelyard.loops import FOREVER, Loop
from modelyard.store.schema import DeliveryRow, EventRow, NamespaceRow, WebhookRow

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Modelyard-Signature-256"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """What a receiver runs: constant-time comparison of the signature header."""
    return hmac.compare_digest(sign(secret, body), header)


def check_pattern(pattern: str) -> None:
    """Refuse a pattern no event type matches: a webhook or a stream filtered by it would never
    get an event."""
    known = [str(t) for t in EventType]
    if any(matches(t, [pattern]) for t in known):
        return
    prefixes = sorted({t.split(".", 1)[0] + ".*" for t in known})
    close = difflib.get_close_matches(pattern, known + prefixes, n=1)
    raise InvalidInput(
        f"event type pattern {pattern!r} matches no event type: "
        + (f"did you mean {close[0]!r}? " if close else "")
        + "write '*', a type such as 'model.version.committed' or a prefix such as 'model.*' "
        "(docs/events.md lists every type)"
    )


@dataclass(frozen=True)
class Backoff:
    base_seconds: float = 1.0
    max_seconds: float = 300.0
    max_attempts: int = 10

    def delay(self, attempts: int) -> float:
        return float(min(self.base_seconds * 2 ** (attempts - 1), self.max_seconds))


class Webhooks:
    """Registration, fan-out and delivery of webhooks."""

    def __init__(
        self, events: EventLog, backoff: Backoff | None = None, client: httpx.Client | None = None
    ) -> None:
        self.events = events
        self.db = events.db
        self.backoff = backoff or Backoff()
        self.client = client or httpx.Client(timeout=10.0)
        self.fanout = DurableConsumer("webhooks.fanout", events, self._fan_out)
        self.loop = Loop("webhooks.delivery", self._deliver, error_wait=1.0)

    # registration -------------------------------------------------------------------------
    def create(
        self, namespace: str, url: str, event_types: list[str], actor: str | None = None
    ) -> tuple[Webhook, str]:
        """Register a webhook; returns it with its signing secret, shown only this once."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidInput(f"webhook url {url!r} does not parse: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidInput(f"webhook url {url!r}: give an absolute http(s) URL")
        if not event_types:
            raise InvalidInput("give at least one event type pattern, e.g. 'model.*' or '*'")
        for pattern in event_types:
            check_pattern(pattern)
        secret = secrets.token_urlsafe(32)
        with self.db.write() as session:
            ns = session.scalar(sa.select(NamespaceRow).where(NamespaceRow.name == namespace))
            if ns is None:
                raise NotFound(f"namespace {namespace!r} does not exist")
            row = WebhookRow(
                id=uuid.uuid4().hex[:16],
                namespace_id=ns.id,
                url=url,
                secret=secret,
                event_types=list(event_types),
                created_at=self.events.clock(),
            )
            session.add(row)
            self.events.append(
                session,
                EventType.WEBHOOK_CREATED,
                f"{namespace}/webhooks/{row.id}",
                {"url": url, "events": event_types},
                namespace=namespace,
                actor=actor,
            )
        return Webhook(
            id=row.id,
            namespace=namespace,
            url=url,
            events=list(event_types),
            created_at=row.created_at,
        ), secret

    def list_hooks(self, namespace: str) -> list[Webhook]:
        with self.db.read() as session:
            rows = session.execute(
                sa.select(WebhookRow, NamespaceRow.name)
                .join(NamespaceRow, NamespaceRow.id == WebhookRow.namespace_id)
                .where(NamespaceRow.name == namespace, WebhookRow.deleted_at.is_(None))
                .order_by(WebhookRow.created_at)
            ).all()
            return [
                Webhook(
                    id=r.id,
                    namespace=ns,
                    url=r.url,
                    events=list(r.event_types),
                    created_at=r.created_at,
                )
                for r, ns in rows
            ]

    def delete(self, namespace: str, webhook_id: str, actor: str | None = None) -> None:
        with self.db.write() as session:
            row = session.execute(
                sa.select(WebhookRow)
                .join(NamespaceRow, NamespaceRow.id == WebhookRow.namespace_id)
                .where(
                    NamespaceRow.name == namespace,
                    WebhookRow.id == webhook_id,
                    WebhookRow.deleted_at.is_(None),
                )
            ).scalar_one_or_none()
            if row is None:
                raise NotFound(f"webhook {webhook_id!r} does not exist in {namespace!r}")
            row.deleted_at = self.events.clock()
            self.events.append(
                session,
                EventType.WEBHOOK_DELETED,
                f"{namespace}/webhooks/{row.id}",
                namespace=namespace,
                actor=actor,
            )

    def deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(
                sa.select(DeliveryRow)
                .where(DeliveryRow.webhook_id == webhook_id)
                .order_by(DeliveryRow.id)
            ).all()
            return [
                {
                    "event_id": r.event_id,
                    "state": r.state,
                    "attempts": r.attempts,
                    "last_status": r.last_status,
                    "last_error": r.last_error,
                }
                for r in rows
            ]

    # fan-out --------------------------------------------------------------------------------
    def _fan_out(self, event: Event) -> None:
        if event.namespace is None:
            return
        with self.db.write() as session:
            hooks = (
                session.execute(
                    sa.select(WebhookRow)
                    .join(NamespaceRow, NamespaceRow.id == WebhookRow.namespace_id)
                    .where(NamespaceRow.name == event.namespace, WebhookRow.deleted_at.is_(None))
                )
                .scalars()
                .all()
            )
            existing = set(
                session.scalars(
                    sa.select(DeliveryRow.webhook_id).where(DeliveryRow.event_id == event.id)
                )
            )
            added = False
            for hook in hooks:
                if hook.id in existing or not matches(event.type, hook.event_types):
                    continue
                session.add(
                    DeliveryRow(
                        webhook_id=hook.id,
                        event_id=event.id,
                        state="pending",
                        attempts=0,
                        next_attempt_at=self.events.clock(),
                    )
                )
                added = True
            self.fanout.advance(session, event.id)
        if added:
            self.loop.wake()

    # delivery -------------------------------------------------------------------------------
    def deliver_due(self) -> float | None:
        """Attempt every due delivery once; returns seconds until the next one is due."""
        now = self.events.clock()
        with self.db.read() as session:
            due = session.execute(
                sa.select(DeliveryRow, WebhookRow, EventRow)
                .join(WebhookRow, WebhookRow.id == DeliveryRow.webhook_id)
                .join(EventRow, EventRow.id == DeliveryRow.event_id)
                .where(DeliveryRow.state == "pending", DeliveryRow.next_attempt_at <= now)
                .order_by(DeliveryRow.id)
                .limit(100)
            ).all()
        for delivery, hook, event_row in due:
            if self.loop.stopping:
                break
            self._attempt(delivery.id, hook, Event.from_row(event_row))
        with self.db.read() as session:
            next_due = session.scalar(
                sa.select(sa.func.min(DeliveryRow.next_attempt_at)).where(
                    DeliveryRow.state == "pending"
                )
            )
        if next_due is None:
            return None
        return max(0.0, (next_due - self.events.clock()).total_seconds())

    def _attempt(self, delivery_id: int, hook: WebhookRow, event: Event) -> None:
        body = json.dumps(event.to_dict(), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "modelyard-webhooks",
            "X-Modelyard-Event": event.type,
            "X-Modelyard-Delivery": str(delivery_id),
            SIGNATURE_HEADER: sign(hook.secret, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = self.client.post(hook.url, content=body, headers=headers)
            status = response.status_code
            if not response.is_success:
                error = f"endpoint answered {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self.db.write() as session:
            row = session.get(DeliveryRow, delivery_id)
            if row is None or row.state != "pending":
                return
            row.attempts += 1
            row.last_status, row.last_error = status, error
            now = self.events.clock()
            if error is None:
                row.state, row.delivered_at = "delivered", now
            elif row.attempts >= self.backoff.max_attempts:
                row.state = "failed"
                log.warning("webhook %s gave up on event %s: %s", hook.id, event.id, error)
            else:
                row.next_attempt_at = now + dt.timedelta(seconds=self.backoff.delay(row.attempts))

    def start(self) -> None:
        self.fanout.start()
        self.loop.start()

    def stop(self) -> None:
        self.loop.request_stop()
        self.fanout.stop()
        self.loop.join(5.0)

    def loops(self) -> list[Loop]:
        return [self.fanout.loop, self.loop]

    def _deliver(self) -> float:
        """Deliver what is due; sleep until the next retry is due (or new deliveries wake it)."""
        wait = self.deliver_due()
        return FOREVER if wait is None else wait
