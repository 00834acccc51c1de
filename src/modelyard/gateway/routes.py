"""The gateway's routing table, and the long poll that keeps it current.

The control plane hands out one table: deployments (status, limits, routed revisions with their
percent, tags and ready endpoints) and keys (id -> secret hash and roles). The gateway routes and
authenticates from it alone, writes it to disk, and keeps using the last one it got when the
control plane cannot be reached: a control plane being down or upgraded stops no inference.

A table is versioned by the control plane's epoch (drawn at each of its starts) and a counter
within it; the gateway asks for changes since the pair it holds, and a control plane of another
epoch answers with its whole table. A gateway that starts holds requests until the control plane
has answered with its table (its saved one may point at replicas that are gone, and at keys that
were revoked since); only when none came within ``TRUST_SAVED_SECONDS`` does it serve the saved one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from modelyard.errors import Forbidden, Unauthenticated
from modelyard.gateway.metrics import Concurrency
from modelyard.gateway.upstream import Endpoint
from modelyard.serving.replica_headers import token_line
from modelyard.telemetry.window import Window
from modelyard.types import Role

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
TRUST_SAVED_SECONDS = 10.0
UNSENT_REPORTS = 3600
"""An hour of the control plane being down, at one report a second."""


@dataclass
class RevisionRoute:
    id: str
    name: str
    percent: int
    tags: list[str]
    endpoints: list[Endpoint]
    credit: int = 0
    """Smooth weighted round robin's running credit (see `DeploymentRoute.pick`)."""
    token_line: bytes = field(default=b"", repr=False)
    """The header line with the revision's replica token, sent with every request forwarded to
    it (encoded once per table); empty from a control plane that predates replica tokens."""


@dataclass
class DeploymentRoute:
    namespace: str
    name: str
    status: str
    timeout_s: float
    max_body_bytes: int
    revisions: list[RevisionRoute]
    deploying: bool = False
    """Its latest revision is starting: requests that find no revision wait for it."""
    id: str = ""
    sticky_header: bytes | None = None
    """Requests with the same value of this header go to the same revision (A/B by user)."""
    shadow: RevisionRoute | None = None
    """Gets a copy of ``shadow.percent`` % of the requests; its answers are compared, not sent."""

    def pick(self, tag: str | None, key: bytes | None = None) -> RevisionRoute | None:
        """The revision a request goes to: the tagged one, else one chosen by percent; with a
        sticky ``key`` the draw is the key's hash, so one key always lands on one revision (and,
        as the weights move, only the keys in the share that moved change revision)."""
        if tag is not None:
            return next((r for r in self.revisions if tag in r.tags), None)
        weighted = [r for r in self.revisions if r.percent > 0]
        if len(weighted) == 1:
            return weighted[0]
        if not weighted:
            return None
        total = sum(r.percent for r in weighted)
        if key is None:
            # Smooth weighted round robin (nginx's): every run of ``total`` requests gives each
            # revision exactly its percent, spread out, so a canary at 10% gets 10% of any
            # stretch of traffic, not 10% on average with a random draw's spread.
            for revision in weighted:
                revision.credit += revision.percent
            chosen = max(weighted, key=lambda r: r.credit)
            chosen.credit -= total
            return chosen
        digest = hashlib.blake2b(key, digest_size=8, key=self.id.encode()[:64]).digest()
        draw = int.from_bytes(digest) / 2**64 * total
        for revision in weighted:
            draw -= revision.percent
            if draw < 0:
                return revision
        return weighted[-1]


@dataclass
class Key:
    secret_hash: str
    admin: bool
    roles: dict[str, str]
    expires: float | None = None
    """Unix time from which the key is refused (None: never); a table may hold a key that
    expired since it was sent."""


@dataclass
class Table:
    version: int = 0
    epoch: str = ""
    deployments: dict[str, DeploymentRoute] = field(default_factory=dict)
    keys: dict[str, Key] = field(default_factory=dict)
    realtime: dict[str, Any] = field(default_factory=dict)
    """Streams, realtime deployments and where their stores are (`modelyard.realtime.ingest`)."""

    @classmethod
    def parse(cls, data: dict[str, Any], endpoints: dict[str, Endpoint]) -> Table:
        """Endpoints of the previous table are reused: their pooled connections and counts of
        outstanding requests carry over."""
        deployments = {}
        for key, item in data.get("deployments", {}).items():
            namespace, _, name = key.partition("/")

            def revision(r: dict[str, Any]) -> RevisionRoute:
                return RevisionRoute(
                    id=r["id"],
                    name=r["name"],
                    percent=int(r["percent"]),
                    tags=list(r["tags"]),
                    endpoints=[
                        endpoints.get(url) or endpoints.setdefault(url, Endpoint.parse(url))
                        for url in r["endpoints"]
                    ],
                    token_line=token_line(r["token"]) if r.get("token") else b"",
                )

            sticky = item.get("sticky_header")
            deployments[key] = DeploymentRoute(
                namespace=namespace,
                name=name,
                status=item["status"],
                timeout_s=float(item["timeout_s"]),
                max_body_bytes=int(item["max_body_bytes"]),
                deploying=bool(item.get("deploying", False)),
                revisions=[revision(r) for r in item["revisions"]],
                id=str(item.get("id", "")),
                sticky_header=sticky.encode() if sticky else None,
                shadow=revision(item["shadow"]) if item.get("shadow") else None,
            )
        keys = {
            key_id: Key(
                k["hash"],
                bool(k["admin"]),
                dict(k["roles"]),
                float(k["expires"]) if k.get("expires") is not None else None,
            )
            for key_id, k in data.get("keys", {}).items()
        }
        version, epoch = int(data.get("version", 0)), str(data.get("epoch", ""))
        return cls(version, epoch, deployments, keys, dict(data.get("realtime") or {}))

    def authorize(
        self, token: str | None, namespace: str, needed: Role = Role.INVOKER
    ) -> tuple[int, str] | None:
        """None when ``token`` has the ``needed`` role in ``namespace`` (every role may invoke);
        else (status, message)."""
        if not token:
            return 401, "no API key: send 'Authorization: Bearer <key>'"
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        key = self.keys.get(key_id) if prefix == "my" and secret else None
        if key is None or not hmac.compare_digest(
            key.secret_hash, hashlib.sha256(secret.encode()).hexdigest()
        ):
            return 401, "unknown or revoked API key"
        if key.expires is not None and time.time() >= key.expires:
            return 401, f"API key {key_id} expired: ask an admin for a new one"
        if not key.admin and namespace not in key.roles:
            # Same answer whether or not the namespace exists: a key learns nothing about others.
            return 403, (
                f"key {key_id} has no invoker role in namespace {namespace!r}: "
                "ask an admin of that namespace for one"
            )
        if needed is not Role.INVOKER and not key.admin:
            role = Role(key.roles[namespace])
            if not role.allows(needed):
                return 403, (
                    f"key {key_id} has no {needed.value} role in namespace {namespace!r} (it is "
                    f"{role.value}): ask an admin of that namespace for one"
                )
        return None

    def require(self, token: str | None, namespace: str, needed: Role = Role.INVOKER) -> None:
        """`authorize` as a rejection: raises `Unauthenticated` (401) or `Forbidden` (403)."""
        denied = self.authorize(token, namespace, needed)
        if denied is not None:
            raise (Unauthenticated if denied[0] == 401 else Forbidden)(denied[1])


class Routes:
    """The current table, replaced whole by the sync loop; waiters hear of each new one."""

    def __init__(self, state_file: Path | None = None) -> None:
        self.table = Table()
        self.state_file = state_file
        self.endpoints: dict[str, Endpoint] = {}
        self._changed = asyncio.Event()
        self.demand: set[str] = set()
        self.demand_posted = asyncio.Event()
        self.current = False
        """The table came from the running control plane (or none came in time: see `trust`)."""
        self._current = asyncio.Event()
        if state_file is not None and state_file.exists():
            try:
                self.apply(json.loads(state_file.read_text()), persist=False)
                log.info(
                    "loaded the saved routing table (version %d); it serves once the control "
                    "plane confirms it, or when the control plane cannot be reached",
                    self.table.version,
                )
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring the saved routing table: %s", exc)

    def apply(self, data: dict[str, Any], *, persist: bool = True) -> None:
        self.table = Table.parse(data, self.endpoints)
        if persist:
            self.trust()
        live = {
            id(e) for d in self.table.deployments.values() for r in d.revisions for e in r.endpoints
        }
        for url, endpoint in list(self.endpoints.items()):
            if id(endpoint) not in live:
                endpoint.close()
                del self.endpoints[url]
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if persist and self.state_file is not None:
            temp = self.state_file.with_suffix(".tmp")
            temp.write_text(json.dumps(data))
            os.replace(temp, self.state_file)

    def trust(self) -> None:
        """Serve from the table held: it came from the control plane, or the control plane has
        not answered for long enough that the saved one is better than nothing."""
        self.current = True
        self._current.set()

    async def settled(self) -> None:
        """Wait until the table may be served (see `trust`)."""
        await self._current.wait()

    async def changed(self, timeout: float) -> bool:
        """Wait for the next table; False after ``timeout``."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def want(self, revision_id: str) -> None:
        """A request waits for ``revision_id``, which has no ready replica: tell the control plane
        now, not at the next poll."""
        self.demand.add(revision_id)
        self.demand_posted.set()


class Sync:
    """Long-polls the control plane: sends measurements and demand, receives tables."""

    def __init__(
        self,
        routes: Routes,
        concurrency: Concurrency,
        window: Window,
        url: str,
        api_key: str | None,
    ) -> None:
        self.routes = routes
        self.concurrency = concurrency
        self.window = window
        self.http = httpx.AsyncClient(
            base_url=f"{url.rstrip('/')}/api/v1",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=POLL_SECONDS + 10,
        )
        self.connected = False
        self._tasks: list[asyncio.Task[None]] = []
        # Per-deployment counts the control plane did not take (it was down) go again with the
        # next poll, each with its id (the control plane drops one it already took) and the
        # time it was measured, so that an outage of the control plane is still in the SLOs.
        self._unsent: deque[dict[str, Any]] = deque(maxlen=UNSENT_REPORTS)
        self._instance = uuid.uuid4().hex[:12]
        self._reports = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._poll_loop()),
            asyncio.create_task(self._demand_loop()),
            asyncio.create_task(self._trust_saved()),
        ]

    async def _trust_saved(self) -> None:
        await asyncio.sleep(TRUST_SAVED_SECONDS)
        if not self.routes.current:
            log.warning(
                "no routing table from the control plane within %.0f s: serving the saved one "
                "(version %d)",
                TRUST_SAVED_SECONDS,
                self.routes.table.version,
            )
            self.routes.trust()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()

    async def _post(self, body: dict[str, Any]) -> None:
        try:
            response = await self.http.post("/gateway/sync", json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            if self.connected:
                log.warning("control plane unreachable (%s): serving from the last table", exc)
            self.connected = False
            raise
        if not self.connected:
            log.info("connected to the control plane")
        self.connected = True
        data = response.json()
        table = data.get("table")
        held = self.routes.table
        if table is not None and (table["version"], table.get("epoch", "")) != (
            held.version,
            held.epoch,
        ):
            self.routes.apply(table)
        elif (data.get("version"), data.get("epoch")) == (held.version, held.epoch):
            self.routes.trust()  # nothing newer: the table held is the control plane's

    async def _poll_loop(self) -> None:
        while True:
            revisions = [r.id for d in self.routes.table.deployments.values() for r in d.revisions]
            traffic = self.window.report()
            self._reports += 1
            traffic["id"], traffic["at"] = f"{self._instance}-{self._reports}", time.time()
            body = {
                "since": self.routes.table.version,
                "epoch": self.routes.table.epoch,
                "stats": self.concurrency.report(revisions),
                "traffic": traffic,
                "backlog": list(self._unsent),
                "demand": [],
                # Until the table held is confirmed, ask without waiting for a change.
                "wait": POLL_SECONDS if self.routes.current else 0,
            }
            try:
                await self._post(body)
            except (httpx.HTTPError, ValueError, KeyError):
                if traffic["deployments"]:  # the SLOs' counts; samples for a judge go stale
                    self._unsent.append({k: traffic[k] for k in ("id", "at", "deployments")})
                await asyncio.sleep(POLL_SECONDS if self.routes.current else 0.1)
                continue
            self._unsent.clear()
            if not self.routes.current:
                await asyncio.sleep(0.02)  # its first reconciliation has not published yet

    async def _demand_loop(self) -> None:
        while True:
            await self.routes.demand_posted.wait()
            self.routes.demand_posted.clear()
            demand, self.routes.demand = sorted(self.routes.demand), set()
            table = self.routes.table
            body = {
                "since": table.version,
                "epoch": table.epoch,
                "stats": {},
                "demand": demand,
                "wait": 0,
            }
            try:
                await self._post(body)
            except (httpx.HTTPError, ValueError, KeyError):
                self.routes.demand.update(demand)
                await asyncio.sleep(0.2)
                self.routes.demand_posted.set()
