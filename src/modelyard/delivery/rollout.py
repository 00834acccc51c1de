"""Rollouts: a new revision takes a deployment's traffic in judged steps, or is rolled back.

Under the ``canary`` strategy, the transaction that marks a new revision ready also starts its
rollout (`Rollouts.begin`, installed as the deployments' ``on_ready`` hook): the traffic is pinned
to the stable revision and the canary at the first step's percent, so the straight replacement
never happens. The `RolloutController` then judges each running rollout about twice a second on
what the gateway measured since the step began (`modelyard.delivery.analysis.judge`):

- ``fail``: all traffic back to stable at once, the canary revision marked ``rejected``, event
  ``rollout.rolled_back`` with the evidence (it may fail before the step's minimum time: bad news
  needs no waiting);
- ``pass`` once the step lasted ``min_step_seconds``: the next step, or after the last one the
  promotion (event ``rollout.promoted``; the canary takes all the traffic);
- ``inconclusive`` (too few requests) for ``max_step_seconds``: the rollout pauses, never passes.

Under the ``shadow`` strategy (the only one besides replacement for a realtime deployment, which
takes no requests to split) the new revision runs beside the stable one, which keeps all the
traffic: a model server gets a copy of every request (its answers compared and discarded), a
realtime worker consumes the same stream and writes its predictions aside
(`modelyard.realtime.worker`). Nothing judges it: it is promoted or rolled back by hand.

A revision that gets ready while a rollout runs supersedes it (its canary goes idle) and starts
its own from the same stable revision. By hand: `start`, `promote`, `rollback`, `pause`,
`resume`, each recorded with its actor.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.delivery.analysis import FAIL, INCONCLUSIVE, PASS, Verdict, judge
from modelyard.delivery.records import RolloutInfo
from modelyard.errors import Conflict, InvalidInput
from modelyard.events.types import EventType
from modelyard.loops import Loop
from modelyard.serving.deployments import Deployments
from modelyard.serving.records import (
    LATEST_READY,
    RolloutStrategy,
    ShadowTarget,
    TrafficTarget,
)
from modelyard.serving.states import ACTIVE_ROLLOUT, RevisionState, RolloutState, Workload
from modelyard.serving.traffic import resolve_traffic, stored_traffic, was_ready
from modelyard.store.schema import DeploymentRow, NamespaceRow, RevisionRow, RolloutRow
from modelyard.telemetry.query import Telemetry

log = logging.getLogger(__name__)
TICK_SECONDS = 0.5
FLUSH_SECONDS = 5.0


class Rollouts:
    def __init__(self, deployments: Deployments, telemetry: Telemetry) -> None:
        self.deployments = deployments
        self.events = deployments.events
        self.db = deployments.db
        self.telemetry = telemetry
        self._verdicts: dict[str, Verdict] = {}
        deployments.on_ready = self._on_ready

    # starting -----------------------------------------------------------------------------------
    def _on_ready(
        self, session: Session, row: DeploymentRow, revision: RevisionRow, namespace: str
    ) -> None:
        strategy = RolloutStrategy.model_validate(row.rollout)
        realtime = revision.workload == Workload.REALTIME_WORKER
        if strategy.strategy == "replace" or (realtime and strategy.strategy != "shadow"):
            return  # a realtime revision takes no requests to split: it replaces the last one
        active = _active(session, row.id)
        if active is not None:
            stable = active.stable
        else:
            others = [r for r in Deployments.revisions(session, row.id) if r.id != revision.id]
            routes = resolve_traffic(stored_traffic(row).targets, others)
            if not routes:
                return  # the first revision: nothing to compare it with
            stable = max(routes, key=lambda n: (routes[n][0], n))
        self._begin(session, row, namespace, stable, revision.number, strategy, "delivery")

    def start(
        self, namespace: str, name: str, revision: int, actor: str | None = None
    ) -> RolloutInfo:
        """Roll ``revision`` (ready once) out with the deployment's canary steps (or as its
        shadow, when that is its strategy or it is a realtime deployment), from the revision
        serving most of the traffic now."""
        with self.db.write() as session:
            row = self.deployments.row(session, namespace, name, lock=True)
            active = _active(session, row.id)
            if active is not None:
                raise Conflict(
                    f"a rollout of revision {active.canary} of {namespace}/{name} is under way: "
                    "promote or roll it back before starting another"
                )
            revisions = Deployments.revisions(session, row.id)
            was_ready({r.number: r for r in revisions}, revision, f"{namespace}/{name}", "revision")
            routes = resolve_traffic(stored_traffic(row).targets, revisions)
            if not routes:
                raise InvalidInput(f"{namespace}/{name} serves no revision to compare with")
            stable = max(routes, key=lambda n: (routes[n][0], n))
            if stable == revision:
                raise InvalidInput(f"revision {revision} already serves {namespace}/{name}")
            strategy = RolloutStrategy.model_validate(row.rollout)
            if row.spec.get("realtime"):
                strategy = strategy.model_copy(update={"strategy": "shadow"})
            elif strategy.strategy == "replace":
                strategy = RolloutStrategy(strategy="canary")
            rollout = self._begin(session, row, namespace, stable, revision, strategy, actor)
            return self._info(rollout)

    def _begin(
        self,
        session: Session,
        row: DeploymentRow,
        namespace: str,
        stable: int,
        canary: int,
        strategy: RolloutStrategy,
        actor: str | None,
    ) -> RolloutRow:
        now = self.events.clock()
        subject = f"{namespace}/{row.name}"
        active = _active(session, row.id)
        if active is not None:
            active.state, active.finished_at = RolloutState.SUPERSEDED, now
            active.reason = f"revision {canary} got ready and replaces the canary"
            self.events.append(
                session,
                EventType.ROLLOUT_SUPERSEDED,
                subject,
                {"rollout": active.id, "canary": active.canary, "by": canary},
                namespace=namespace,
                actor=actor,
            )
        rollout = RolloutRow(
            id=uuid.uuid4().hex,
            deployment_id=row.id,
            stable=stable,
            canary=canary,
            strategy=strategy.model_dump(mode="json"),
            state=RolloutState.RUNNING,
            step=0,
            step_started_at=now,
            analyses=[],
            reason=None,
            started_by=actor,
            started_at=now,
            finished_at=None,
        )
        session.add(rollout)
        self._split(session, row, namespace, rollout, strategy, actor)
        self.events.append(
            session,
            EventType.ROLLOUT_STARTED,
            subject,
            {"rollout": rollout.id, "stable": stable, "canary": canary, "steps": strategy.steps},
            namespace=namespace,
            actor=actor,
        )
        return rollout

    # by hand ------------------------------------------------------------------------------------
    def promote(self, namespace: str, name: str, actor: str | None = None) -> RolloutInfo:
        return self._by_hand(namespace, name, actor, "promote")

    def rollback(self, namespace: str, name: str, actor: str | None = None) -> RolloutInfo:
        return self._by_hand(namespace, name, actor, "rollback")

    def pause(self, namespace: str, name: str, actor: str | None = None) -> RolloutInfo:
        return self._by_hand(namespace, name, actor, "pause")

    def resume(self, namespace: str, name: str, actor: str | None = None) -> RolloutInfo:
        return self._by_hand(namespace, name, actor, "resume")

    def _by_hand(self, namespace: str, name: str, actor: str | None, action: str) -> RolloutInfo:
        with self.db.write() as session:
            row = self.deployments.row(session, namespace, name, lock=True)
            rollout = _active(session, row.id)
            if rollout is None:
                raise Conflict(
                    f"no rollout of {namespace}/{name} is under way: "
                    f"'modelyard deployments rollout {namespace}/{name} --revision N' starts one"
                )
            by = f"by {actor or 'an unknown key'}"
            if action in ("promote", "rollback"):
                outcome = RolloutState.PROMOTED if action == "promote" else RolloutState.ROLLED_BACK
                reason = f"{outcome.replace('_', ' ')} {by}"
                self._finish(session, row, namespace, rollout, outcome, reason, {}, actor)
            elif (action == "pause") == (rollout.state == RolloutState.PAUSED):
                raise Conflict(f"the rollout of {namespace}/{name} is {rollout.state} already")
            else:
                rollout.state = RolloutState.PAUSED if action == "pause" else RolloutState.RUNNING
                rollout.reason = f"paused {by}" if action == "pause" else None
                rollout.step_started_at = self.events.clock()  # a fresh window on resume
                self.events.append(
                    session,
                    EventType.ROLLOUT_PAUSED if action == "pause" else EventType.ROLLOUT_RESUMED,
                    f"{namespace}/{name}",
                    {"rollout": rollout.id, "canary": rollout.canary, "step": rollout.step},
                    namespace=namespace,
                    actor=actor,
                )
            return self._info(rollout)

    def record_shadow(
        self, namespace: str, name: str, revision: int, counts: dict[str, int]
    ) -> RolloutInfo:
        """Add a realtime shadow worker's comparison counts to its rollout under way."""
        with self.db.write() as session:
            row = self.deployments.row(session, namespace, name, lock=True)
            rollout = _active(session, row.id)
            shadow = RolloutStrategy.model_validate(rollout.strategy) if rollout else None
            if rollout is None or rollout.canary != revision or shadow is None:
                raise Conflict(f"revision {revision} of {namespace}/{name} is no shadow any more")
            if shadow.strategy != "shadow":
                raise Conflict(f"revision {revision} of {namespace}/{name} is a canary")
            total = dict(rollout.analyses[0]["shadow"]) if rollout.analyses else {}
            for result, n in counts.items():
                total[result] = total.get(result, 0) + n
            rollout.analyses = [{"shadow": total, "at": self.events.clock().isoformat()}]
            return self._info(rollout)

    # judging ------------------------------------------------------------------------------------
    def drive(self) -> None:
        """Judge every running rollout once, acting on what the verdicts say."""
        with self.db.read() as session:
            running = session.execute(
                sa.select(RolloutRow.id, RolloutRow.strategy).where(
                    RolloutRow.state == RolloutState.RUNNING
                )
            )
            # a shadow waits for a decision by hand: nothing to judge
            ids = [id for id, strategy in running if strategy.get("strategy") != "shadow"]
        for rollout_id in ids:
            try:
                self._drive(rollout_id)
            except Exception:
                log.exception("judging rollout %s failed; it is judged again shortly", rollout_id)

    def _drive(self, rollout_id: str) -> None:
        with self.db.write() as session:
            rollout = session.get(RolloutRow, rollout_id, with_for_update=True)
            if rollout is None or rollout.state != RolloutState.RUNNING:
                return
            row = session.get(DeploymentRow, rollout.deployment_id)
            assert row is not None
            namespace = session.get(NamespaceRow, row.namespace_id)
            assert namespace is not None
            ids = {r.number: r.id for r in Deployments.revisions(session, row.id)}
            strategy = RolloutStrategy.model_validate(rollout.strategy)
            since = rollout.step_started_at
            verdict = judge(
                self.telemetry.totals(row.id, revision=ids[rollout.stable], since=since),
                self.telemetry.totals(row.id, revision=ids[rollout.canary], since=since),
                strategy.analysis,
            )
            self._verdicts[rollout.id] = verdict
            # After a restart the step's earlier measurements are gone: its time counts anew.
            elapsed = (self.events.clock() - max(since, self.telemetry.started)).total_seconds()
            percent = strategy.steps[rollout.step]
            record = {
                "step": rollout.step,
                "percent": percent,
                "result": verdict.result,
                "reasons": verdict.reasons,
                "evidence": verdict.evidence,
                "seconds": round(elapsed, 3),
                "at": self.events.clock().isoformat(),
            }
            if verdict.result == FAIL:
                reason = f"step {rollout.step + 1} ({percent}%) failed: " + "; ".join(
                    verdict.reasons
                )
                self._finish(
                    session,
                    row,
                    namespace.name,
                    rollout,
                    RolloutState.ROLLED_BACK,
                    reason,
                    record,
                    None,
                )
            elif verdict.result == PASS and elapsed >= strategy.min_step_seconds:
                if strategy.steps[rollout.step + 1] == 100:
                    reason = f"every step passed ({', '.join(map(str, strategy.steps[:-1]))}%)"
                    self._finish(
                        session,
                        row,
                        namespace.name,
                        rollout,
                        RolloutState.PROMOTED,
                        reason,
                        record,
                        None,
                    )
                else:
                    rollout.analyses = [*rollout.analyses, record]
                    rollout.step += 1
                    rollout.step_started_at = self.events.clock()
                    self._split(session, row, namespace.name, rollout, strategy, None)
            elif verdict.result == INCONCLUSIVE and elapsed >= strategy.max_step_seconds:
                rollout.analyses = [*rollout.analyses, record]
                rollout.state = RolloutState.PAUSED
                rollout.reason = (
                    f"step {rollout.step + 1} stayed inconclusive for {elapsed:.0f} s: "
                    + "; ".join(verdict.reasons)
                    + ": send more traffic and resume, or promote / roll back by hand"
                )
                self.events.append(
                    session,
                    EventType.ROLLOUT_PAUSED,
                    f"{namespace.name}/{row.name}",
                    {"rollout": rollout.id, "canary": rollout.canary, "analysis": record},
                    namespace=namespace.name,
                )

    # outcomes -----------------------------------------------------------------------------------
    def _split(
        self,
        session: Session,
        row: DeploymentRow,
        namespace: str,
        rollout: RolloutRow,
        strategy: RolloutStrategy,
        actor: str | None,
    ) -> None:
        """The traffic of the rollout's step: split, or all to stable with the canary as the
        shadow (of every request)."""
        current = stored_traffic(row)
        if strategy.strategy == "shadow":
            targets = [TrafficTarget(revision=rollout.stable, percent=100, tag="stable")]
            shadow = ShadowTarget(revision=rollout.canary, percent=100)
            traffic = current.model_copy(update={"targets": targets, "shadow": shadow})
        else:
            percent = strategy.steps[rollout.step]
            targets = [
                TrafficTarget(revision=rollout.stable, percent=100 - percent, tag="stable"),
                TrafficTarget(revision=rollout.canary, percent=percent, tag="canary"),
            ]
            traffic = current.model_copy(update={"targets": targets})
        data = {"rollout": rollout.id, "step": rollout.step}
        self.deployments.write_traffic(session, row, namespace, traffic, actor, data)

    def _settle(
        self,
        session: Session,
        row: DeploymentRow,
        namespace: str,
        number: int,
        data: dict[str, Any],
        shadowed: bool = False,
    ) -> None:
        """All traffic to revision ``number``: "the latest ready" when that is it (so later
        revisions are rolled out as the strategy says), else pinned to it; and no shadow any
        more when the rollout had one."""
        latest = max(
            (
                r.number
                for r in Deployments.revisions(session, row.id)
                if r.state == RevisionState.READY
            ),
            default=0,
        )
        targets = (
            LATEST_READY.targets
            if latest == number
            else [TrafficTarget(revision=number, percent=100)]
        )
        traffic = stored_traffic(row).model_copy(update={"targets": targets})
        if shadowed:
            traffic = traffic.model_copy(update={"shadow": None})
        self.deployments.write_traffic(session, row, namespace, traffic, None, data)

    def _finish(
        self,
        session: Session,
        row: DeploymentRow,
        namespace: str,
        rollout: RolloutRow,
        outcome: RolloutState,
        reason: str,
        record: dict[str, Any],
        actor: str | None,
    ) -> None:
        """End ``rollout``: promoted (all traffic to the canary) or rolled back (all traffic to
        stable at once, the canary revision rejected), with the step's analysis as evidence."""
        now = self.events.clock()
        rollout.state, rollout.reason, rollout.finished_at = outcome, reason, now
        if record:
            rollout.analyses = [*rollout.analyses, record]
        self._verdicts.pop(rollout.id, None)
        subject = f"{namespace}/{row.name}"
        data: dict[str, Any] = {
            "rollout": rollout.id,
            "stable": rollout.stable,
            "canary": rollout.canary,
            "reason": reason,
            "analysis": record or None,
        }
        if outcome == RolloutState.ROLLED_BACK:
            canary = session.scalar(
                sa.select(RevisionRow)
                .where(RevisionRow.deployment_id == row.id, RevisionRow.number == rollout.canary)
                .with_for_update()
            )
            assert canary is not None
            canary.state, canary.reason, canary.retired_at = RevisionState.REJECTED, reason, now
            data["model_version"] = canary.version_number
            self.events.append(
                session,
                EventType.REVISION_REJECTED,
                subject,
                {
                    "revision": canary.number,
                    "model_version": canary.version_number,
                    "reason": reason,
                },
                namespace=namespace,
                actor=actor,
            )
        winner = rollout.canary if outcome == RolloutState.PROMOTED else rollout.stable
        shadowed = RolloutStrategy.model_validate(rollout.strategy).strategy == "shadow"
        self._settle(session, row, namespace, winner, {"rollout": rollout.id}, shadowed)
        event = (
            EventType.ROLLOUT_PROMOTED
            if outcome == RolloutState.PROMOTED
            else EventType.ROLLOUT_ROLLED_BACK
        )
        self.events.append(session, event, subject, data, namespace=namespace, actor=actor)

    # reads --------------------------------------------------------------------------------------
    def history(self, namespace: str, name: str, limit: int = 20) -> list[RolloutInfo]:
        """The deployment's rollouts, newest first."""
        with self.db.read() as session:
            row = self.deployments.row(session, namespace, name)
            rows = session.scalars(
                sa.select(RolloutRow)
                .where(RolloutRow.deployment_id == row.id)
                .order_by(RolloutRow.started_at.desc())
                .limit(limit)
            )
            return [self._info(r) for r in rows]

    def _info(self, row: RolloutRow) -> RolloutInfo:
        strategy = RolloutStrategy.model_validate(row.strategy)
        steps = strategy.steps
        verdict = self._verdicts.get(row.id) if row.state in ACTIVE_ROLLOUT else None
        return RolloutInfo(
            id=row.id,
            stable=row.stable,
            canary=row.canary,
            state=row.state,
            step=row.step,
            percent=(0 if strategy.strategy == "shadow" else steps[row.step])
            if row.state in ACTIVE_ROLLOUT
            else (100 if row.state == RolloutState.PROMOTED else 0),
            steps=steps,
            step_started_at=row.step_started_at,
            analyses=list(row.analyses),
            last_verdict=(
                {"result": verdict.result, "reasons": verdict.reasons, "evidence": verdict.evidence}
                if verdict
                else None
            ),
            reason=row.reason,
            strategy="shadow" if strategy.strategy == "shadow" else "canary",
            shadow=row.analyses[0]["shadow"]
            if strategy.strategy == "shadow" and row.analyses
            else None,
            started_by=row.started_by,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


class RolloutController:
    """Judges rollouts about twice a second and, every ``flush_seconds``, writes the per-minute
    traffic counts the SLOs read (`Telemetry.flush`)."""

    def __init__(
        self,
        rollouts: Rollouts,
        *,
        interval: float = TICK_SECONDS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.rollouts = rollouts
        self.interval = interval
        self.flush_seconds = flush_seconds
        self.loop = Loop("rollouts", self._tick, interval=interval, wait_first=True)
        self._flushed = time.monotonic()

    def start(self) -> None:
        self._flushed = time.monotonic()
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()
        self._flush()

    def _tick(self) -> None:
        self.rollouts.drive()
        if time.monotonic() - self._flushed >= self.flush_seconds:
            self._flush()
            self._flushed = time.monotonic()

    def _flush(self) -> None:
        self.rollouts.telemetry.flush()


def _active(session: Session, deployment_id: str) -> RolloutRow | None:
    return session.scalar(
        sa.select(RolloutRow)
        .where(RolloutRow.deployment_id == deployment_id, RolloutRow.state.in_(ACTIVE_ROLLOUT))
        .with_for_update()
    )
