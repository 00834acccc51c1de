"""Registered pipelines and their runs: what the API reads and writes.

The executor owns what happens inside a run; this module owns registration, run creation with
checked parameters, and the read side (runs, their steps and history).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.events.log import EventLog
from modelyard.events.types import EventType
from modelyard.pipelines.records import HistoryEntry, PipelineInfo, RunInfo, StepInfo
from modelyard.pipelines.spec import PYTHON_TYPES, PipelineSpec
from modelyard.pipelines.states import RETRYABLE, RunState
from modelyard.pipelines.validate import validate
from modelyard.registry._lookup import namespace_row
from modelyard.store.schema import (
    NamespaceRow,
    PipelineRow,
    PipelineVersionRow,
    RunHistoryRow,
    RunRow,
    StepRunRow,
)
from modelyard.types import check_name

MIN_PREFIX = 4
_HEX = frozenset("0123456789abcdef")


def check_params(spec: PipelineSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The run's parameters: defaults filled in, unknown or mistyped ones refused."""
    declared = {p.name: p for p in spec.params}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InvalidInput(
            f"pipeline {spec.name!r} has no parameter {unknown[0]!r}; it takes "
            f"{sorted(declared) or 'none'}"
        )
    resolved: dict[str, Any] = {}
    for name, p in declared.items():
        if name not in given:
            if p.required:
                raise InvalidInput(f"pipeline {spec.name!r} needs parameter {name!r} ({p.type})")
            resolved[name] = p.default
            continue
        value, expected = given[name], PYTHON_TYPES[p.type]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise InvalidInput(f"pipeline parameter {name!r} is {p.type}, got {value!r}")
        resolved[name] = value
    return resolved


class Pipelines:
    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.db = events.db

    # registration -------------------------------------------------------------------------------
    def register(
        self, namespace: str, spec: PipelineSpec, actor: str | None = None
    ) -> PipelineInfo:
        validate(spec)
        digest = spec.digest()
        now = self.events.clock()
        with self.db.write() as session:
            ns = namespace_row(session, namespace)
            row = session.scalar(
                sa.select(PipelineRow).where(
                    PipelineRow.namespace_id == ns.id, PipelineRow.name == spec.name
                )
            )
            if row is None:
                row = PipelineRow(namespace_id=ns.id, name=spec.name, created_at=now)
                session.add(row)
                session.flush()
            exists = session.scalar(
                sa.select(PipelineVersionRow.id).where(
                    PipelineVersionRow.pipeline_id == row.id, PipelineVersionRow.digest == digest
                )
            )
            if exists is None:
                session.add(
                    PipelineVersionRow(
                        pipeline_id=row.id,
                        digest=digest,
                        spec=spec.model_dump(mode="json"),
                        created_by=actor,
                        created_at=now,
                    )
                )
                self.events.append(
                    session,
                    EventType.PIPELINE_REGISTERED,
                    f"{namespace}/{spec.name}",
                    {"name": spec.name, "digest": digest},
                    namespace=namespace,
                    actor=actor,
                )
            session.flush()
            return self._info(session, row, namespace)

    def list_pipelines(self, namespace: str) -> list[PipelineInfo]:
        with self.db.read() as session:
            ns = namespace_row(session, namespace)
            rows = session.scalars(
                sa.select(PipelineRow)
                .where(PipelineRow.namespace_id == ns.id)
                .order_by(PipelineRow.name)
            )
            return [self._info(session, row, namespace) for row in rows]

    def get(self, namespace: str, name: str) -> PipelineInfo:
        with self.db.read() as session:
            return self._info(session, self._row(session, namespace, name), namespace)

    def spec(
        self, namespace: str, name: str, digest: str | None = None
    ) -> tuple[int, PipelineSpec]:
        """The newest registered spec of ``name`` (or the one with ``digest``) and its row id."""
        with self.db.read() as session:
            row = self._row(session, namespace, name)
            query = sa.select(PipelineVersionRow).where(PipelineVersionRow.pipeline_id == row.id)
            if digest:
                query = query.where(PipelineVersionRow.digest == digest)
            version = session.scalar(query.order_by(PipelineVersionRow.id.desc()).limit(1))
            if version is None:
                raise NotFound(f"pipeline {namespace}/{name} has no version {digest!r}")
            return version.id, PipelineSpec.model_validate(version.spec)

    def _row(self, session: Session, namespace: str, name: str) -> PipelineRow:
        ns = namespace_row(session, namespace)
        check_name(name, "pipeline name")
        row = session.scalar(
            sa.select(PipelineRow).where(
                PipelineRow.namespace_id == ns.id, PipelineRow.name == name
            )
        )
        if row is None:
            raise NotFound(
                f"pipeline {namespace}/{name} does not exist: register it with "
                f"'modelyard pipelines register MODULE:FUNCTION -n {namespace}'"
            )
        return row

    def _info(self, session: Session, row: PipelineRow, namespace: str) -> PipelineInfo:
        versions = session.scalars(
            sa.select(PipelineVersionRow)
            .where(PipelineVersionRow.pipeline_id == row.id)
            .order_by(PipelineVersionRow.id)
        ).all()
        latest = versions[-1]
        return PipelineInfo(
            namespace=namespace,
            name=row.name,
            digest=latest.digest,
            description=str(latest.spec.get("description", "")),
            versions=len(versions),
            created_at=row.created_at,
            updated_at=latest.created_at,
        )

    # runs ---------------------------------------------------------------------------------------
    def create_run(
        self,
        namespace: str,
        name: str,
        params: dict[str, Any],
        *,
        actor: str | None = None,
        schedule_id: str | None = None,
        event_id: int | None = None,
        fire_time: dt.datetime | None = None,
        session: Session | None = None,
    ) -> str:
        """Queue a run of the newest spec; returns its id. The executor picks it up."""
        version_id, spec = self.spec(namespace, name)
        resolved = check_params(spec, params)
        run_id = uuid.uuid4().hex
        now = self.events.clock()

        def write(s: Session) -> None:
            ns = namespace_row(s, namespace)
            s.add(
                RunRow(
                    id=run_id,
                    namespace_id=ns.id,
                    pipeline_version_id=version_id,
                    params=resolved,
                    state=RunState.QUEUED,
                    schedule_id=schedule_id,
                    event_id=event_id,
                    fire_time=fire_time,
                    created_by=actor,
                    created_at=now,
                )
            )
            s.flush()  # no ORM relationships: insert the run before rows that point at it
            s.add(
                RunHistoryRow(
                    run_id=run_id,
                    node=None,
                    at=now,
                    message=(
                        f"queued by {actor or 'the platform'}"
                        if schedule_id is None
                        else f"queued by schedule {schedule_id}"
                        + (f" for event {event_id}" if event_id else f" for {fire_time}")
                    ),
                )
            )
            self.events.append(
                s,
                EventType.RUN_QUEUED,
                f"{namespace}/runs/{run_id}",
                {"run": run_id, "pipeline": name, "params": resolved},
                namespace=namespace,
                actor=actor,
            )

        if session is not None:
            write(session)
        else:
            with self.db.write() as s:
                write(s)
        return run_id

    def get_run(self, namespace: str, run_id: str) -> RunInfo:
        with self.db.read() as session:
            row = self._run_row(session, namespace, run_id)
            steps = session.scalars(
                sa.select(StepRunRow).where(StepRunRow.run_id == run_id).order_by(StepRunRow.id)
            ).all()
            history = session.scalars(
                sa.select(RunHistoryRow)
                .where(RunHistoryRow.run_id == run_id)
                .order_by(RunHistoryRow.id)
            ).all()
            info = self._run_info(session, row, namespace)
            return info.model_copy(
                update={
                    "steps": [
                        StepInfo(
                            node=s.node,
                            task=s.task_id,
                            attempt=s.attempt,
                            state=s.state,
                            reason=s.reason,
                            cache_key=s.cache_key,
                            cached_from=s.cached_from,
                            exit_code=s.exit_code,
                            outputs=dict(s.outputs),
                            started_at=s.started_at,
                            finished_at=s.finished_at,
                        )
                        for s in steps
                    ],
                    "history": [
                        HistoryEntry(at=h.at, node=h.node, message=h.message) for h in history
                    ],
                }
            )

    def list_runs(
        self, namespace: str, pipeline: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        with self.db.read() as session:
            ns = namespace_row(session, namespace)
            query = sa.select(RunRow).where(RunRow.namespace_id == ns.id)
            if pipeline is not None:
                versions = sa.select(PipelineVersionRow.id).where(
                    PipelineVersionRow.pipeline_id == self._row(session, namespace, pipeline).id
                )
                query = query.where(RunRow.pipeline_version_id.in_(versions))
            rows = session.scalars(query.order_by(RunRow.created_at.desc()).limit(limit))
            return [self._run_info(session, row, namespace) for row in rows]

    def resolve_run(self, namespace: str, text: str) -> str:
        """A run's id from its id or a unique prefix of it (``MIN_PREFIX`` characters or more),
        as git takes commit prefixes; a prefix of several runs is refused with their ids."""
        with self.db.read() as session:
            ns = namespace_row(session, namespace)
            row = session.get(RunRow, text)
            if row is not None and row.namespace_id == ns.id:
                return text
            if len(text) >= MIN_PREFIX and set(text) <= _HEX:
                found = session.scalars(
                    sa.select(RunRow.id)
                    .where(RunRow.namespace_id == ns.id, RunRow.id.startswith(text))
                    .order_by(RunRow.created_at.desc())
                    .limit(4)
                ).all()
                if len(found) == 1:
                    return found[0]
                if found:
                    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
                    raise InvalidInput(
                        f"run {text!r} is the start of several runs in {namespace!r} "
                        f"({shown}): give more of the id"
                    )
        raise NotFound(f"run {text!r} does not exist in {namespace!r}")

    def run_namespace(self, run_id: str) -> str:
        with self.db.read() as session:
            name = session.scalar(
                sa.select(NamespaceRow.name)
                .join(RunRow, RunRow.namespace_id == NamespaceRow.id)
                .where(RunRow.id == run_id)
            )
            if name is None:
                raise NotFound(f"run {run_id!r} does not exist")
            return name

    def _run_row(self, session: Session, namespace: str, run_id: str) -> RunRow:
        ns = namespace_row(session, namespace)
        row = session.get(RunRow, run_id)
        if row is None or row.namespace_id != ns.id:
            raise NotFound(f"run {run_id!r} does not exist in {namespace!r}")
        return row

    def _run_info(self, session: Session, row: RunRow, namespace: str) -> RunInfo:
        version = session.get(PipelineVersionRow, row.pipeline_version_id)
        assert version is not None
        pipeline = session.get(PipelineRow, version.pipeline_id)
        assert pipeline is not None
        return RunInfo(
            id=row.id,
            namespace=namespace,
            pipeline=pipeline.name,
            digest=version.digest,
            params=dict(row.params),
            state=row.state,
            reason=row.reason,
            schedule_id=row.schedule_id,
            event_id=row.event_id,
            created_by=row.created_by,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )

    def check_retryable(self, namespace: str, run_id: str) -> None:
        with self.db.read() as session:
            row = self._run_row(session, namespace, run_id)
            if row.state not in RETRYABLE:
                raise Conflict(
                    f"run {run_id} is {row.state}: only failed or cancelled runs can be retried"
                )
