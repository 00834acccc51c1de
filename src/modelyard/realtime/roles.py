"""How a realtime worker learns its revision's role from the control plane (the primary, the
shadow of a rollout, or neither any more: `modelyard.realtime.shadow.role`) and acts on it."""

from __future__ import annotations

import logging
import threading

from modelyard.client import Client
from modelyard.errors import NotFound, ServerUnreachable
from modelyard.realtime.shadow import Role, role
from modelyard.realtime.worker import Worker
from modelyard.serving.replica_headers import TOKEN_HEADER

log = logging.getLogger(__name__)
ROLE_S = 1.0
"""How often a worker asks the control plane what its revision is (primary, shadow, ...)."""


class Roles:
    """Follows what the control plane says the worker's revision is (`role`): starts the
    worker as the primary or the shadow, promotes it, stops it when rolled back or superseded
    (dropping what it kept aside), and reports the shadow's comparison counts. While the control
    plane is unreachable it keeps the last role; a worker starts only once it knows its role."""

    def __init__(self, worker: Worker, client: Client, revision: int, token: str) -> None:
        self.worker = worker
        self.client = client
        self.revision = revision
        self.current: Role | None = None
        namespace, _, name = worker.name.partition("/")
        self._ref = (namespace, name)
        self._results = f"/namespaces/{namespace}/realtime/{name}/shadow-results"
        self._headers = {TOKEN_HEADER.decode(): token}

    def run(self, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                self.step()
            except Exception:
                log.exception("following the revision's role failed; trying again")
            stopped.wait(0.2 if self.current in (None, "pending") else ROLE_S)

    def fetch(self) -> Role | None:
        try:
            return role(self.client.get_deployment(*self._ref), self.revision)
        except (ServerUnreachable, NotFound) as exc:
            log.warning("keeping the role %s: %s", self.current, exc)
            return None

    def step(self) -> None:
        wanted = self.fetch()
        if wanted is not None and wanted != self.current:
            self.become(wanted)
        self.report()

    def become(self, wanted: Role) -> None:
        worker, was = self.worker, self.current
        log.info("revision %d: %s -> %s", self.revision, was, wanted)
        if wanted == "pending":  # a shadow to be: it starts from the primary's cursor of now
            worker.shadow(self.revision)
        elif wanted == "primary" and was == "shadow":
            worker.promote()
        elif wanted == "primary" and was in (None, "pending", "idle"):
            worker.primary()
            worker.start()
        elif wanted == "shadow" and was in (None, "pending", "idle"):
            worker.shadow(self.revision)
            worker.start()
        elif wanted == "idle" and was in ("primary", "shadow"):
            worker.stop()
            self.report()
            worker.drop(worker.deployment)
        elif was is not None:
            return
        self.current = wanted

    def report(self) -> None:
        comparison = self.worker.comparison
        if comparison is None:
            return
        comparison.check()
        counts = comparison.take()
        if not any(counts.values()):
            return
        try:
            body = {"revision": self.revision, **counts}
            self.client.request("POST", self._results, json=body, headers=self._headers)
        except Exception:
            comparison.counts.update(counts)  # sent with the next report
            raise

    def close(self) -> None:
        """At the worker's end: a shadow that is no shadow any more drops what it kept aside."""
        if self.current == "shadow" and self.fetch() == "idle":
            self.worker.drop(self.worker.deployment)
