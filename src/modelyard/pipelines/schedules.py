"""Schedules: runs on a cron or an interval, and runs started by events (data triggers).

A time schedule fires from a controller thread that sleeps until the next fire time (or until a
schedule changes). An event schedule is a durable consumer of the event log: each matching event
starts one run, whose unique (schedule, event) key and the consumer's cursor are written in one
transaction, so an event starts at most one run even across restarts.
``max_concurrency`` counts a schedule's unfinished runs; past it, ``overlap="skip"`` drops the
fire (and says so in the event log) and ``overlap="wait"`` queues the run, which the executor
starts when one of the schedule's runs ends.
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.events.consumers import DurableConsumer
from modelyard.events.log import EventLog
from modelyard.events.records import Event
from modelyard.events.types import VERSION_COMMITTED, EventType
from modelyard.loops import FOREVER, Loop
from modelyard.pipelines.records import ScheduleInfo, ScheduleSpec
from modelyard.pipelines.runs import Pipelines, check_params
from modelyard.pipelines.states import ACTIVE
from modelyard.pipelines.timing import Timing, due, next_fire
from modelyard.registry._lookup import namespace_row
from modelyard.store.schema import NamespaceRow, PipelineRow, RunRow, ScheduleRow
from modelyard.types import ModelRef, check_name

log = logging.getLogger(__name__)
TRIGGER_EVENTS = frozenset(VERSION_COMMITTED.values())


def _timing(row: ScheduleRow) -> Timing:
    return ScheduleSpec.model_validate(row.timing).timing()


class Schedules:
    def __init__(self, events: EventLog, pipelines: Pipelines) -> None:
        self.events = events
        self.db = events.db
        self.pipelines = pipelines
        self.triggers = DurableConsumer("schedules.triggers", events, self._on_event)
        self.loop = Loop("schedules", self._fire, error_wait=5.0)
        self.on_run_created: list[Any] = []

    # management ---------------------------------------------------------------------------------
    def create(self, namespace: str, spec: ScheduleSpec, actor: str | None = None) -> ScheduleInfo:
        check_name(spec.name, "schedule name")
        if spec.kind != "event":
            spec.timing()  # validates cron, timezone, bounds
        else:
            target = ModelRef.parse(spec.target or "")
            if target.namespace != namespace:
                raise InvalidInput(
                    "an event trigger watches models or datasets of its own namespace"
                )
        _, pipeline_spec = self.pipelines.spec(namespace, spec.pipeline)
        given = dict(spec.params)
        if spec.param:
            if spec.param not in {p.name for p in pipeline_spec.params}:
                raise InvalidInput(f"pipeline {spec.pipeline!r} has no parameter {spec.param!r}")
            given[spec.param] = f"{spec.target}@1"
        check_params(pipeline_spec, given)
        now = self.events.clock()
        with self.db.write() as session:
            ns = namespace_row(session, namespace)
            pipeline = session.scalar(
                sa.select(PipelineRow).where(
                    PipelineRow.namespace_id == ns.id, PipelineRow.name == spec.pipeline
                )
            )
            assert pipeline is not None
            if session.scalar(
                sa.select(ScheduleRow.id).where(
                    ScheduleRow.namespace_id == ns.id, ScheduleRow.name == spec.name
                )
            ):
                raise Conflict(f"schedule {spec.name!r} already exists in {namespace!r}")
            row = ScheduleRow(
                id=uuid.uuid4().hex[:16],
                namespace_id=ns.id,
                name=spec.name,
                pipeline_id=pipeline.id,
                kind=spec.kind,
                timing=spec.model_dump(mode="json"),
                params=spec.params,
                max_concurrency=spec.max_concurrency,
                overlap=spec.overlap or "skip",
                paused=False,
                last_fire=None,
                created_by=actor,
                created_at=now,
            )
            session.add(row)
            self.events.append(
                session,
                EventType.SCHEDULE_CREATED,
                f"{namespace}/schedules/{spec.name}",
                {"pipeline": spec.pipeline, "kind": spec.kind},
                namespace=namespace,
                actor=actor,
            )
            info = self._info(row, namespace, spec.pipeline)
        self._poke()
        return info

    def list(self, namespace: str) -> list[ScheduleInfo]:
        with self.db.read() as session:
            ns = namespace_row(session, namespace)
            rows = session.execute(
                sa.select(ScheduleRow, PipelineRow.name)
                .join(PipelineRow, PipelineRow.id == ScheduleRow.pipeline_id)
                .where(ScheduleRow.namespace_id == ns.id)
                .order_by(ScheduleRow.name)
            ).all()
            return [self._info(row, namespace, pipeline) for row, pipeline in rows]

    def set_paused(
        self, namespace: str, name: str, paused: bool, actor: str | None = None
    ) -> ScheduleInfo:
        with self.db.write() as session:
            row, pipeline = self._row(session, namespace, name)
            row.paused = paused
            if not paused and not ScheduleSpec.model_validate(row.timing).catchup:
                # Resuming without catchup starts from now, not from every slot missed while
                # paused.
                row.last_fire = max(row.last_fire or row.created_at, self.events.clock())
            self.events.append(
                session,
                EventType.SCHEDULE_PAUSED if paused else EventType.SCHEDULE_RESUMED,
                f"{namespace}/schedules/{name}",
                namespace=namespace,
                actor=actor,
            )
            info = self._info(row, namespace, pipeline)
        self._poke()
        return info

    def delete(self, namespace: str, name: str, actor: str | None = None) -> None:
        with self.db.write() as session:
            row, _ = self._row(session, namespace, name)
            session.delete(row)
            self.events.append(
                session,
                EventType.SCHEDULE_DELETED,
                f"{namespace}/schedules/{name}",
                namespace=namespace,
                actor=actor,
            )
        self._poke()

    def _row(self, session: Session, namespace: str, name: str) -> tuple[ScheduleRow, str]:
        ns = namespace_row(session, namespace)
        found = session.execute(
            sa.select(ScheduleRow, PipelineRow.name)
            .join(PipelineRow, PipelineRow.id == ScheduleRow.pipeline_id)
            .where(ScheduleRow.namespace_id == ns.id, ScheduleRow.name == name)
        ).first()
        if found is None:
            raise NotFound(f"schedule {name!r} does not exist in {namespace!r}")
        return found[0], found[1]

    def _info(self, row: ScheduleRow, namespace: str, pipeline: str) -> ScheduleInfo:
        upcoming = None
        if row.kind != "event" and not row.paused:
            upcoming = next_fire(
                _timing(row),
                row.last_fire or max(row.created_at, _timing(row).start or row.created_at),
            )
        return ScheduleInfo(
            id=row.id,
            namespace=namespace,
            name=row.name,
            pipeline=pipeline,
            kind=row.kind,
            spec=dict(row.timing),
            paused=row.paused,
            last_fire=row.last_fire,
            next_fire=upcoming,
            created_at=row.created_at,
        )

    # firing -------------------------------------------------------------------------------------
    def fire_due(self) -> float | None:
        """Start the runs that are due now; returns seconds until the next fire time."""
        now = self.events.clock()
        soonest: dt.datetime | None = None
        with self.db.read() as session:
            rows = (
                session.execute(
                    sa.select(ScheduleRow.id).where(
                        ScheduleRow.kind != "event", ScheduleRow.paused.is_(False)
                    )
                )
                .scalars()
                .all()
            )
        for schedule_id in rows:
            upcoming = self._fire_one(schedule_id, now)
            if upcoming is not None and (soonest is None or upcoming < soonest):
                soonest = upcoming
        return None if soonest is None else max(0.0, (soonest - now).total_seconds())

    def _fire_one(self, schedule_id: str, now: dt.datetime) -> dt.datetime | None:
        created: list[str] = []
        with self.db.write() as session:
            row = session.get(ScheduleRow, schedule_id)
            if row is None or row.paused:
                return None
            timing = _timing(row)
            namespace, pipeline = self._names(session, row)
            for slot in due(timing, row.last_fire, now, row.created_at):
                if self._at_limit(session, row):
                    self.events.append(
                        session,
                        EventType.SCHEDULE_SKIPPED,
                        f"{namespace}/schedules/{row.name}",
                        {
                            "fire_time": slot.isoformat(),
                            "reason": f"{row.max_concurrency} run(s) still running",
                        },
                        namespace=namespace,
                    )
                else:
                    created.append(
                        self.pipelines.create_run(
                            namespace,
                            pipeline,
                            dict(row.params),
                            schedule_id=row.id,
                            fire_time=slot,
                            session=session,
                        )
                    )
                row.last_fire = slot
            upcoming = next_fire(
                timing, row.last_fire or max(row.created_at, timing.start or row.created_at)
            )
        if created:
            self._notify_created()
        return upcoming

    def _at_limit(self, session: Session, row: ScheduleRow) -> bool:
        if row.overlap == "wait":
            return False  # queued; the executor starts it when a slot frees
        active = (
            session.scalar(
                sa.select(sa.func.count())
                .select_from(RunRow)
                .where(RunRow.schedule_id == row.id, RunRow.state.in_(ACTIVE))
            )
            or 0
        )
        return active >= row.max_concurrency

    def _names(self, session: Session, row: ScheduleRow) -> tuple[str, str]:
        namespace = session.get(NamespaceRow, row.namespace_id)
        pipeline = session.get(PipelineRow, row.pipeline_id)
        assert namespace is not None and pipeline is not None
        return namespace.name, pipeline.name

    def _on_event(self, event: Event) -> None:
        if event.type not in TRIGGER_EVENTS or event.namespace is None:
            return
        target = f"{event.data.get('namespace')}/{event.data.get('name')}"
        created = False
        with self.db.write() as session:
            rows = session.scalars(
                sa.select(ScheduleRow).where(
                    ScheduleRow.kind == "event", ScheduleRow.paused.is_(False)
                )
            ).all()
            for row in rows:
                spec = ScheduleSpec.model_validate(row.timing)
                if spec.on != event.type or spec.target != target:
                    continue
                exists = session.scalar(
                    sa.select(RunRow.id).where(
                        RunRow.schedule_id == row.id, RunRow.event_id == event.id
                    )
                )
                if exists:
                    continue  # replayed after a restart: this event already started its run
                namespace, pipeline = self._names(session, row)
                if self._at_limit(session, row):
                    self.events.append(
                        session,
                        EventType.SCHEDULE_SKIPPED,
                        f"{namespace}/schedules/{row.name}",
                        {"event": event.id, "reason": "max_concurrency reached"},
                        namespace=namespace,
                    )
                    continue
                params = {**row.params, spec.param or "": f"{target}@{event.data['version']}"}
                self.pipelines.create_run(
                    namespace,
                    pipeline,
                    params,
                    schedule_id=row.id,
                    event_id=event.id,
                    session=session,
                )
                created = True
            self.triggers.advance(session, event.id)
        if created:
            self._notify_created()

    def _notify_created(self) -> None:
        for callback in self.on_run_created:
            callback()

    # the controller -------------------------------------------------------------------------------
    def start(self) -> None:
        self.triggers.start()
        self.loop.start()

    def stop(self) -> None:
        self.loop.request_stop()
        self.triggers.stop()
        self.loop.join(5.0)

    def loops(self) -> builtins.list[Loop]:  # `list` here is the method above
        return [self.loop, self.triggers.loop]

    def _poke(self) -> None:
        self.loop.wake()

    def _fire(self) -> float:
        """Fire what is due; sleep until the next fire time (or a change wakes the loop)."""
        wait = self.fire_due()
        return FOREVER if wait is None else wait
