"""The database side of running pipelines: run and step-run rows, the run's history, its events.

The executor decides; the ledger writes each decision in one transaction before the executor acts
on it, so a control plane that stops and starts again finds every run where it was: finished
steps kept, running steps recorded as interrupted (they run again as a new attempt), the history
saying so. Each write also appends the run's events (``run.started``, ``step.failed``,
``run.succeeded`` ...) in the same transaction: an event is never seen for a state that was not
recorded, nor lost for one that was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.events.log import EventLog
from modelyard.events.types import EventType
from modelyard.pipelines.graph import Node, RunGraph
from modelyard.pipelines.spec import PipelineSpec
from modelyard.pipelines.states import RETRYABLE, RUN_ENDED, RunState, StepState
from modelyard.store.schema import (
    CacheEntryRow,
    NamespaceRow,
    PipelineVersionRow,
    RunHistoryRow,
    RunRow,
    ScheduleRow,
    StepRunRow,
)


@dataclass
class ActiveRun:
    """A run the executor drives: its graph, and whether it is being cancelled."""

    id: str
    namespace: str
    graph: RunGraph
    cancelling: bool = False

    @property
    def spec(self) -> PipelineSpec:
        return self.graph.spec


class RunLedger:
    """Reads runs to drive and records what happens to them; every method is one transaction."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.db = events.db

    # runs to drive ------------------------------------------------------------------------------
    def claim_queued(self) -> list[ActiveRun]:
        """Mark queued runs running (oldest first) and return them; a run of a schedule whose
        ``max_concurrency`` runs are active stays queued (overlap="wait")."""
        claimed: list[ActiveRun] = []
        with self.db.write() as session:
            rows = session.scalars(
                sa.select(RunRow).where(RunRow.state == RunState.QUEUED).order_by(RunRow.created_at)
            ).all()
            for row in rows:
                if row.schedule_id is not None and self._schedule_full(session, row):
                    continue
                run = self._load(session, row)
                row.state, row.started_at = RunState.RUNNING, self.events.clock()
                self._history(session, run.id, None, "started")
                self._event(session, run, EventType.RUN_STARTED)
                claimed.append(run)
        return claimed

    def resume(self) -> list[ActiveRun]:
        """Runs a previous control plane left running or cancelling, with their recorded nodes.
        A step that was running is recorded as interrupted and its node is pending again: a new
        attempt, not counted against its retries. A retrying node may start at once."""
        resumed: list[ActiveRun] = []
        with self.db.write() as session:
            rows = session.scalars(
                sa.select(RunRow).where(RunRow.state.in_((RunState.RUNNING, RunState.CANCELLING)))
            ).all()
            for row in rows:
                run = self._load(session, row)
                for step in self._steps(session, row.id):
                    node = self._restore(run, step)
                    if step.state == StepState.RUNNING:
                        step.state, step.finished_at = StepState.INTERRUPTED, self.events.clock()
                        step.reason = "the control plane stopped while it ran"
                        node.state = StepState.PENDING
                        self._history(
                            session,
                            run.id,
                            node.id,
                            f"attempt {step.attempt} interrupted by a control-plane "
                            "stop; it runs again",
                        )
                    elif step.state == StepState.RETRYING:
                        node.ready_at = 0.0
                self._history(session, run.id, None, "resumed after a control-plane restart")
                run.cancelling = row.state == RunState.CANCELLING
                resumed.append(run)
        return resumed

    def reopen(self, run_id: str) -> ActiveRun | None:
        """A failed or cancelled run, running again: its failed, cancelled and never-run nodes
        pending, its succeeded, cached and skipped ones kept. None for a run in another state."""
        with self.db.write() as session:
            row = session.get(RunRow, run_id)
            if row is None or row.state not in RETRYABLE:
                return None
            run = self._load(session, row)
            for step in self._steps(session, run_id):
                self._restore(run, step)
            for node in run.graph.nodes.values():
                if node.state not in (StepState.SUCCEEDED, StepState.CACHED, StepState.SKIPPED):
                    node.state = StepState.PENDING
            row.state, row.finished_at, row.reason = RunState.RUNNING, None, None
            self._history(session, run_id, None, "retried: failed and cancelled steps run again")
            self._event(session, run, EventType.RUN_RETRIED)
        return run

    # steps --------------------------------------------------------------------------------------
    def reuse_cached(
        self,
        run: ActiveRun,
        node: Node,
        key: str,
        ttl: float | None,
        usable: Callable[[dict[str, Any]], bool],
    ) -> bool:
        """Record ``node`` as cached from the entry under ``key`` (no older than ``ttl`` seconds,
        and ``usable(outputs)``, i.e. its blobs still stored); False when there is none."""
        with self.db.write() as session:
            entry = session.get(CacheEntryRow, key)
            if entry is None:
                return False
            if ttl is not None and (self.events.clock() - entry.created_at).total_seconds() > ttl:
                return False
            if not usable(entry.outputs):
                return False
            node.outputs = dict(entry.outputs)
            now = self.events.clock()
            row = StepRunRow(
                run_id=run.id,
                node=node.id,
                task_id=node.task.id,
                attempt=node.attempt,
                state=StepState.CACHED,
                cache_key=key,
                cached_from=entry.step_run_id,
                outputs=node.outputs,
                started_at=now,
                finished_at=now,
            )
            session.add(row)
            session.flush()
            node.step_run_id, node.state = row.id, StepState.CACHED
            self._history(
                session,
                run.id,
                node.id,
                f"cache hit: reused the outputs of step run {entry.step_run_id}",
            )
        return True

    def started(self, run: ActiveRun, node: Node, key: str | None) -> None:
        """Record a new attempt of ``node`` as running (under cache key ``key``)."""
        with self.db.write() as session:
            row = StepRunRow(
                run_id=run.id,
                node=node.id,
                task_id=node.task.id,
                attempt=node.attempt,
                state=StepState.RUNNING,
                cache_key=key,
                outputs={},
                started_at=self.events.clock(),
            )
            session.add(row)
            session.flush()
            node.step_run_id, node.state = row.id, StepState.RUNNING

    def succeeded(self, run: ActiveRun, node: Node, published: list[str]) -> None:
        """Record the running attempt of ``node`` as succeeded with ``node.outputs``, which
        become the cache entry of its key; ``published`` names the versions it committed."""
        with self.db.write() as session:
            row = session.get(StepRunRow, node.step_run_id)
            assert row is not None
            row.state, row.outputs, row.exit_code = StepState.SUCCEEDED, node.outputs, 0
            row.finished_at = self.events.clock()
            if row.cache_key:
                session.merge(
                    CacheEntryRow(
                        key=row.cache_key,
                        step_run_id=row.id,
                        outputs=node.outputs,
                        created_at=row.finished_at,
                    )
                )
            note = f"succeeded (attempt {node.attempt})"
            if published:
                note += "; published " + ", ".join(published)
            self._history(session, run.id, node.id, note)
        node.state = StepState.SUCCEEDED

    def settle(
        self, run: ActiveRun, node: Node, state: StepState, reason: str, code: int | None = None
    ) -> None:
        """Record ``node`` in ``state`` for ``reason`` (a node that never started gets a row of
        its own); ``failed`` appends ``step.failed``."""
        with self.db.write() as session:
            row = session.get(StepRunRow, node.step_run_id) if node.step_run_id else None
            if row is None or row.state != StepState.RUNNING:
                row = StepRunRow(
                    run_id=run.id,
                    node=node.id,
                    task_id=node.task.id,
                    attempt=max(node.attempt, 1),
                    state=state,
                    outputs={},
                    started_at=None,
                )
                session.add(row)
                session.flush()
                node.step_run_id = row.id
            row.state, row.reason, row.exit_code = state, reason, code
            row.finished_at = self.events.clock()
            self._history(session, run.id, node.id, f"{state}: {reason}")
            if state == StepState.FAILED:
                self._event(
                    session, run, EventType.STEP_FAILED, {"step": node.id, "reason": reason}
                )
        node.state = state

    # the end of a run ---------------------------------------------------------------------------
    def end(self, run: ActiveRun, state: RunState, reason: str | None) -> None:
        """Record the run finished in ``state``; appends ``run.<state>``."""
        with self.db.write() as session:
            row = session.get(RunRow, run.id)
            assert row is not None
            row.state, row.reason, row.finished_at = state, reason, self.events.clock()
            self._history(session, run.id, None, state + (f": {reason}" if reason else ""))
            self._event(session, run, RUN_ENDED[state], {"reason": reason})

    def cancel_queued(self, run_id: str) -> None:
        """Cancel a run that has not started; nothing for a run in another state."""
        with self.db.write() as session:
            row = session.get(RunRow, run_id)
            if row is not None and row.state == RunState.QUEUED:
                row.state, row.finished_at = RunState.CANCELLED, self.events.clock()
                self._history(session, run_id, None, "cancelled before it started")

    def cancelling(self, run: ActiveRun, grace_seconds: float) -> None:
        """Record that ``run`` is being cancelled (its steps get ``grace_seconds`` to stop)."""
        run.cancelling = True
        with self.db.write() as session:
            row = session.get(RunRow, run.id)
            assert row is not None
            row.state = RunState.CANCELLING
            self._history(
                session,
                run.id,
                None,
                f"cancel requested: SIGTERM to running steps, SIGKILL after {grace_seconds:g} s",
            )

    # reading and bookkeeping --------------------------------------------------------------------
    def _load(self, session: Session, row: RunRow) -> ActiveRun:
        version = session.get(PipelineVersionRow, row.pipeline_version_id)
        namespace = session.get(NamespaceRow, row.namespace_id)
        assert version is not None and namespace is not None
        spec = PipelineSpec.model_validate(version.spec)
        return ActiveRun(row.id, namespace.name, RunGraph.of(spec, dict(row.params)))

    @staticmethod
    def _steps(session: Session, run_id: str) -> list[StepRunRow]:
        return list(
            session.scalars(
                sa.select(StepRunRow)
                .where(StepRunRow.run_id == run_id)
                .order_by(StepRunRow.attempt)
            ).all()
        )

    @staticmethod
    def _restore(run: ActiveRun, step: StepRunRow) -> Node:
        return run.graph.restore(
            step.node, step.task_id, step.state, step.attempt, step.id, dict(step.outputs)
        )

    def _schedule_full(self, session: Session, row: RunRow) -> bool:
        schedule = session.get(ScheduleRow, row.schedule_id)
        if schedule is None:
            return False
        active = (
            session.scalar(
                sa.select(sa.func.count())
                .select_from(RunRow)
                .where(
                    RunRow.schedule_id == row.schedule_id,
                    RunRow.state.in_((RunState.RUNNING, RunState.CANCELLING)),
                )
            )
            or 0
        )
        return active >= schedule.max_concurrency

    def _history(self, session: Session, run_id: str, node: str | None, message: str) -> None:
        session.add(
            RunHistoryRow(run_id=run_id, node=node, message=message, at=self.events.clock())
        )

    def _event(
        self, session: Session, run: ActiveRun, type: EventType, data: dict[str, Any] | None = None
    ) -> None:
        self.events.append(
            session,
            type,
            f"{run.namespace}/runs/{run.id}",
            {"run": run.id, "pipeline": run.spec.name, **(data or {})},
            namespace=run.namespace,
        )
