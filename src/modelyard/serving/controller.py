"""The serving controller: reconciles deployments with replicas and publishes routes.

One thread, woken by every committed event (a new revision, a traffic change, a key revoked) and
by the orchestrator (a replica got ready or died), and otherwise every ``TICK_SECONDS``:

- routed revisions get the replica count their autoscaler (KPA) decides;
- the latest revision, while it deploys, gets as many replicas as the one it replaces serves with;
  once they are all ready it is marked ready and, with traffic following the latest ready
  revision, takes the traffic (straight replacement); a revision whose replicas cannot start is
  marked failed with the reason, and the old one keeps serving;
- revisions no traffic reaches are retired and their replicas drained.

A realtime deployment's revisions (`Workload.REALTIME_WORKER`) go the same way with one replica
each and no autoscaler (they take no requests to measure), and stay out of the gateway's routes:
the new revision's worker replaces the old one once it is ready.

The gateway long-polls :meth:`ServingController.sync`: it hands in what it measured (concurrency
per revision, requests waiting for a revision at zero) and gets the routing table back as soon as
it changed. The table carries the keys too, so the gateway authenticates without a database and
keeps serving from its last table when the control plane is down.

A table's version is an ``(epoch, counter)`` pair: the counter lives in this process's memory, the
epoch is drawn anew each time the controller starts. A gateway that asks with another epoch (it
outlived a control plane, or reloaded a table saved under an earlier one) holds a version this
process never issued and cannot compare, so it gets the whole table as soon as there is one.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from modelyard.auth.keys import KeyStore
from modelyard.events.log import EventLog
from modelyard.loops import Loop
from modelyard.serving.autoscaler import Decision, Kpa
from modelyard.serving.deployments import Deployments, Plan, Revision, Route
from modelyard.serving.orchestrator import Orchestrator
from modelyard.serving.records import DeploymentInfo
from modelyard.serving.states import ReplicaState, RevisionState, Workload
from modelyard.telemetry.query import Telemetry

log = logging.getLogger(__name__)
TICK_SECONDS = 0.5
REALTIME_REPLICAS = 1
"""A realtime revision's workers. One: the NATS queue hands one entity's triggers out one at a
time per client process, so two workers of a deployment could run one entity's triggers out of
order (the SQLite queue would not), and a worker starting ends the leases of the one it replaces
(`modelyard.realtime.worker`)."""


class ServingController:
    def __init__(
        self,
        deployments: Deployments,
        keys: KeyStore,
        orchestrator: Orchestrator,
        events: EventLog,
        telemetry: Telemetry,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deployments = deployments
        self.telemetry = telemetry
        self.keys = keys
        self.orchestrator = orchestrator
        self.events = events
        self.clock = clock
        orchestrator.on_change = self.wake
        self._kpas: dict[str, Kpa] = {}
        self._decisions: dict[str, Decision] = {}
        self.loop = Loop("serving", self.reconcile, interval=TICK_SECONDS)
        self._unsubscribe: Callable[[], None] | None = None
        self._table: dict[str, Any] = {}
        self._version = 0
        self.epoch = uuid.uuid4().hex[:16]
        self._changed = threading.Condition()
        self.realtime_table: Callable[[], dict[str, Any]] = dict
        """Streams and realtime deployments for the gateway (`modelyard.realtime.catalog`)."""

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.orchestrator.start()
        self._unsubscribe = self.events.subscribe(lambda _: self.wake())
        self.loop.start()

    def stop(self, *, keep_replicas: bool = False) -> None:
        self.loop.request_stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.loop.join()
        self.orchestrator.stop(keep_replicas=keep_replicas)
        with self._changed:
            self._changed.notify_all()

    def wake(self) -> None:
        self.loop.wake()

    def loops(self) -> list[Loop]:
        """This controller's loop and its orchestrator's (an orchestrator may have none)."""
        more: Callable[[], list[Loop]] | None = getattr(self.orchestrator, "loops", None)
        return [self.loop, *(more() if more is not None else [])]

    # reconciliation -----------------------------------------------------------------------------
    def reconcile(self) -> None:
        plans = self.deployments.plans()
        known: set[str] = set()
        for plan in plans:
            serving = 0
            for route in plan.routes + ([plan.shadow] if plan.shadow else []):
                revision = route.revision
                known.add(revision.id)
                ready = self._ready(revision.id)
                serving += ready
                if revision.workload == Workload.REALTIME_WORKER:
                    self.orchestrator.scale(revision, REALTIME_REPLICAS)
                else:
                    decision = self._kpa(revision, ready).decide(ready)
                    self._decisions[revision.id] = decision
                    self.orchestrator.scale(revision, decision.desired)
                if revision.state == RevisionState.RETIRED and ready:
                    self.deployments.set_state(revision.id, RevisionState.READY)
            if plan.deploying is not None:
                known.add(plan.deploying.id)
                self._deploy(plan.deploying, serving)
            for revision in plan.idle:
                known.add(revision.id)
                self.orchestrator.scale(revision, 0)
                self._kpas.pop(revision.id, None)
                self._decisions.pop(revision.id, None)
                if revision.state == RevisionState.READY:
                    self.deployments.set_state(revision.id, RevisionState.RETIRED)
        for revision_id in self.orchestrator.revisions() - known:
            self.orchestrator.stop_revision(revision_id)  # its deployment was deleted
        for revision_id in set(self._kpas) - known:
            del self._kpas[revision_id]
        self._publish(plans)

    def _deploy(self, revision: Revision, serving: int) -> None:
        failure = self.orchestrator.failure(revision.id)
        if failure is not None:
            self.orchestrator.scale(revision, 0)
            self.deployments.set_state(revision.id, RevisionState.FAILED, failure)
            return
        # It starts with as many replicas as the revision it replaces serves with.
        initial = (
            REALTIME_REPLICAS
            if revision.workload == Workload.REALTIME_WORKER
            else self._kpa(revision, max(1, serving)).spec.initial_replicas
        )
        self.orchestrator.scale(revision, initial)
        if self._ready(revision.id) >= initial:
            log.info("revision %s is ready", revision.name)
            self.deployments.set_state(revision.id, RevisionState.READY)
            self.wake()

    def _kpa(self, revision: Revision, running: int) -> Kpa:
        """The revision's autoscaler, made on first use to start from at least ``running``
        replicas: a routed revision met without history (the control plane restarted and
        adopted its replicas) keeps what runs until measurements say otherwise."""
        kpa = self._kpas.get(revision.id)
        if kpa is None:
            scaling = revision.spec.autoscaling
            initial = min(scaling.max_replicas, max(scaling.initial_replicas, running))
            spec = scaling.model_copy(update={"initial_replicas": initial})
            kpa = self._kpas[revision.id] = Kpa(spec, self.clock)
        return kpa

    def _ready(self, revision_id: str) -> int:
        return sum(r.state == ReplicaState.READY for r in self.orchestrator.replicas(revision_id))

    # routes and the gateway ---------------------------------------------------------------------
    def _publish(self, plans: list[Plan]) -> None:
        table = {
            "deployments": {
                f"{plan.namespace}/{plan.name}": {
                    "status": plan.status,
                    "timeout_s": plan.timeout_s,
                    "max_body_bytes": plan.max_body_bytes,
                    "deploying": plan.deploying is not None,
                    "id": plan.deployment_id,
                    "sticky_header": plan.sticky_header,
                    "revisions": [self._route(route) for route in plan.routes],
                    "shadow": self._route(plan.shadow) if plan.shadow else None,
                }
                for plan in plans
                if plan.workload == Workload.MODEL_SERVER
            },
            "keys": self.keys.data_plane_table(),
            "realtime": self.realtime_table(),
        }
        with self._changed:
            if table != self._table:
                self._table = table
                self._version += 1
                self._changed.notify_all()

    def _route(self, route: Route) -> dict[str, Any]:
        return {
            "id": route.revision.id,
            "name": route.revision.name,
            "percent": route.percent,
            "tags": list(route.tags),
            "endpoints": [
                r.url
                for r in self.orchestrator.replicas(route.revision.id)
                if r.state == ReplicaState.READY
            ],
            # The gateway sends it to the replicas, which answer nobody else.
            "token": route.revision.token,
        }

    def sync(
        self,
        since: int,
        stats: dict[str, tuple[float, int]],
        demand: list[str],
        wait: float,
        traffic: dict[str, Any] | None = None,
        epoch: str = "",
        backlog: list[dict[str, Any]] | None = None,
    ) -> tuple[int, dict[str, Any] | None]:
        """The gateway's long poll: record its measurements, then return the table once its
        version is newer than ``since`` of ``epoch`` (or ``None`` after ``wait`` seconds);
        ``backlog`` holds the reports an earlier poll could not deliver. A
        ``since`` of another epoch counts as none: the whole table, once the first
        reconciliation published it (an empty table before that would drop every route)."""
        if epoch != self.epoch:
            since = 0
        for report in [*(backlog or ()), *([traffic] if traffic else [])]:
            self.telemetry.add(report)
        for revision_id, (concurrency, requests) in stats.items():
            kpa = self._kpas.get(revision_id)
            if kpa is not None:
                kpa.record(max(0.0, concurrency), max(0, requests))
        for revision_id in demand:
            kpa = self._kpas.get(revision_id)
            if kpa is not None:
                kpa.demand()
        if demand:
            self.wake()
        with self._changed:
            self._changed.wait_for(
                lambda: self._version > since or self.loop.stopping, 0 if demand else wait
            )
            if self._version > since:
                return self._version, {"version": self._version, "epoch": self.epoch, **self._table}
            return self._version, None

    # status -------------------------------------------------------------------------------------
    def describe(self, info: DeploymentInfo) -> DeploymentInfo:
        """``info`` with each revision's replicas and its autoscaler's latest decision."""
        revisions = []
        for revision in info.revisions:
            revision_id = revision.id
            decision = self._decisions.get(revision_id)
            replicas = [
                r
                for r in self.orchestrator.replicas(revision_id)
                if r.state != ReplicaState.TERMINATING
            ]
            revisions.append(
                revision.model_copy(
                    update={
                        "replicas": replicas,
                        "desired_replicas": decision.desired if decision else len(replicas),
                        "scaling": decision.reason if decision else "",
                    }
                )
            )
        return info.model_copy(update={"revisions": revisions})
