"""Per-minute counts of each deployment, durably: the ``traffic_minutes`` table.

What the SLOs are judged on and the dashboard charts over days: requests, errors and latency
buckets of every deployment, and the lag samples of realtime deployments. Several reports of one
minute add up (`record`; lag samples named ``namespace/name`` find their deployment in `resolve`);
reads sum ranges in the database (`sums`) or hand the minutes over as they are (`read`); minutes no
reader needs any more are deleted (`prune`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, TypeVar, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from modelyard.store.db import Database
from modelyard.store.schema import DeploymentRow, NamespaceRow, TrafficMinuteRow
from modelyard.telemetry.records import (
    BUCKETS,
    LAG_BUCKETS,
    LagMinute,
    Point,
    Sample,
    TrafficMinute,
)

K = TypeVar("K", bound=Hashable)


class Minutes:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, minutes: Iterable[TrafficMinute]) -> int:
        """Add per-minute counts into the stored minutes (several reports of one minute add up).
        Counts of deployments that no longer exist are dropped. Returns the minutes kept."""
        merged: dict[tuple[str, dt.datetime], TrafficMinute] = {}
        for m in minutes:
            key = (m.deployment_id, m.minute)
            old = merged.get(key)
            merged[key] = m if old is None else old.plus(m)
        if not merged:
            return 0
        with self.db.write() as session:
            alive = set(
                session.scalars(
                    sa.select(DeploymentRow.id)
                    .where(DeploymentRow.id.in_({d for d, _ in merged}))
                    .order_by(DeploymentRow.id)  # one lock order: concurrent writers never deadlock
                    .with_for_update()
                )
            )
            insert = sqlite.insert if self.db.is_sqlite else postgresql.insert
            table = cast(sa.Table, TrafficMinuteRow.__table__)
            kept = [m for (deployment_id, _), m in merged.items() if deployment_id in alive]
            if not kept:
                return 0
            inserted = session.execute(
                insert(table)
                .on_conflict_do_nothing()
                .returning(table.c.deployment_id, table.c.minute),
                [
                    {
                        "deployment_id": m.deployment_id,
                        "minute": m.minute,
                        "requests": m.requests,
                        "errors": m.errors,
                        "buckets": list(m.buckets),
                        "lag_samples": m.lag_samples,
                        "lag_buckets": list(m.lag_buckets),
                    }
                    for m in kept
                ],
            ).all()
            new = {(d, _utc(at)) for d, at in inserted}
            for m in kept:  # minutes already there: add into them
                if (m.deployment_id, m.minute) in new:
                    continue
                row = session.get(
                    TrafficMinuteRow, (m.deployment_id, m.minute), with_for_update=True
                )
                assert row is not None
                stored = TrafficMinute(
                    row.deployment_id,
                    m.minute,
                    row.requests,
                    row.errors,
                    row.buckets,
                    row.lag_samples,
                    row.lag_buckets,
                )
                summed = stored.plus(m)
                row.requests, row.errors = summed.requests, summed.errors
                row.buckets = summed.buckets
                row.lag_samples, row.lag_buckets = summed.lag_samples, summed.lag_buckets
            return len(kept)

    def resolve(self, lags: Iterable[LagMinute]) -> list[TrafficMinute]:
        """Lag samples named ``namespace/name`` as minutes of the deployments of those names;
        samples of names no deployment has (deleted meanwhile) are dropped."""
        lags = list(lags)
        names = {lag.deployment.partition("/")[2] for lag in lags}
        if not names:
            return []
        with self.db.read() as session:
            found = session.execute(
                sa.select(NamespaceRow.name, DeploymentRow.name, DeploymentRow.id)
                .join(NamespaceRow, NamespaceRow.id == DeploymentRow.namespace_id)
                .where(DeploymentRow.name.in_(names))
            ).all()
        ids = {f"{namespace}/{name}": deployment_id for namespace, name, deployment_id in found}
        return [
            TrafficMinute(ids[lag.deployment], lag.minute, 0, 0, [], lag.samples, lag.buckets)
            for lag in lags
            if lag.deployment in ids
        ]

    def sums(
        self,
        deployment_id: str,
        starts: Mapping[K, dt.datetime],
        until: dt.datetime | None = None,
        *,
        buckets: bool = True,
        lag: bool = False,
    ) -> dict[K, Sample]:
        """Requests, errors, (with ``buckets``) requests per latency bucket and (with ``lag``) lag
        samples, in all and per lag bucket, of the minutes from each of ``starts`` until
        ``until``, summed by the database in one query."""
        minute = TrafficMinuteRow.minute
        values: list[sa.ColumnElement[Any]] = [
            TrafficMinuteRow.requests.expression,
            TrafficMinuteRow.errors.expression,
        ]
        width_buckets = len(BUCKETS) + 1 if buckets else 0
        if buckets:
            values += [
                sa.func.coalesce(TrafficMinuteRow.buckets[i].as_integer(), 0)
                for i in range(width_buckets)
            ]
        if lag:
            values.append(TrafficMinuteRow.lag_samples.expression)
            values += [
                sa.func.coalesce(TrafficMinuteRow.lag_buckets[i].as_integer(), 0)
                for i in range(len(LAG_BUCKETS) + 1)
            ]
        columns = [
            sa.func.sum(sa.case((minute >= start, value), else_=0))
            for start in starts.values()
            for value in values
        ]
        if not columns:
            return {}
        where = [TrafficMinuteRow.deployment_id == deployment_id, minute >= min(starts.values())]
        if until is not None:
            where.append(minute < until)
        with self.db.read() as session:
            found = session.execute(sa.select(*columns).where(*where)).one()
        width = len(values)
        result: dict[K, Sample] = {}
        for n, key in enumerate(starts):
            counts = [int(v or 0) for v in found[n * width : (n + 1) * width]]
            sample = Sample(counts[0], counts[1], buckets=counts[2 : 2 + width_buckets])
            if lag:
                sample.lag_samples = counts[2 + width_buckets]
                sample.lag_buckets = counts[3 + width_buckets :]
            result[key] = sample
        return result

    def steps(
        self,
        deployment_id: str,
        since: dt.datetime,
        step: dt.timedelta,
        until: dt.datetime | None = None,
    ) -> list[Point]:
        """The deployment's stored minutes from ``since`` until ``until`` summed per ``step`` by
        the database (30 days of minutes in one GROUP BY, not 43,200 rows parsed here): one point
        per step that has minutes, at the step's start, oldest first."""
        minute = TrafficMinuteRow.minute
        since_s, step_s = since.timestamp(), step.total_seconds()
        index: sa.ColumnElement[int]
        if self.db.is_sqlite:  # whole minutes stored as text; CAST truncates, offsets are >= 0
            seconds = sa.cast(sa.func.strftime("%s", minute), sa.Float)
            index = sa.cast((seconds - since_s) / step_s, sa.Integer)
        else:
            offset = sa.extract("epoch", minute) - since_s
            index = sa.cast(sa.func.floor(offset / step_s), sa.Integer)
        index = index.label("step")
        width = len(BUCKETS) + 1
        columns = [
            sa.func.sum(TrafficMinuteRow.requests),
            sa.func.sum(TrafficMinuteRow.errors),
            *(
                sa.func.sum(sa.func.coalesce(TrafficMinuteRow.buckets[i].as_integer(), 0))
                for i in range(width)
            ),
        ]
        where = [TrafficMinuteRow.deployment_id == deployment_id, minute >= since]
        if until is not None:
            where.append(minute < until)
        with self.db.read() as session:
            rows = session.execute(
                sa.select(index, *columns).where(*where).group_by(index).order_by(index)
            ).all()
        return [
            Point(
                since + n * step,
                Sample(int(requests or 0), int(errors or 0), buckets=[int(b or 0) for b in found]),
            )
            for n, requests, errors, *found in rows
        ]

    def read(
        self, deployment_id: str, since: dt.datetime, until: dt.datetime | None = None
    ) -> list[Point]:
        """The deployment's stored minutes from ``since`` until ``until``, oldest first.

        Read as the driver gives them (30 days are 43,200 rows): SQLite hands over text, parsed
        here faster than through the column types; PostgreSQL's driver decodes both itself."""
        raw = sa.String()
        where = [TrafficMinuteRow.deployment_id == deployment_id, TrafficMinuteRow.minute >= since]
        if until is not None:
            where.append(TrafficMinuteRow.minute < until)
        with self.db.read() as session:
            rows = session.execute(
                sa.select(
                    sa.type_coerce(TrafficMinuteRow.minute, raw),
                    TrafficMinuteRow.requests,
                    TrafficMinuteRow.errors,
                    sa.type_coerce(TrafficMinuteRow.buckets, raw),
                )
                .where(*where)
                .order_by(TrafficMinuteRow.minute)
            ).all()
        return [
            Point(_utc(at), Sample(count, errors, buckets=_buckets(found)))
            for at, count, errors, found in rows
        ]

    def oldest(self) -> dict[str, dt.datetime]:
        """The first stored minute of each deployment that has any."""
        with self.db.read() as session:
            found = session.execute(
                sa.select(
                    TrafficMinuteRow.deployment_id, sa.func.min(TrafficMinuteRow.minute)
                ).group_by(TrafficMinuteRow.deployment_id)
            ).all()
        return {deployment_id: _utc(at) for deployment_id, at in found}

    def prune(self, cutoffs: Mapping[str, dt.datetime]) -> int:
        """Delete each deployment's minutes before its cutoff; returns how many went."""
        if not cutoffs:
            return 0
        deleted = 0
        with self.db.write() as session:
            for deployment_id, cutoff in cutoffs.items():
                done = session.execute(
                    sa.delete(TrafficMinuteRow).where(
                        TrafficMinuteRow.deployment_id == deployment_id,
                        TrafficMinuteRow.minute < cutoff,
                    )
                )
                deleted += cast(sa.CursorResult[Any], done).rowcount
        return deleted


def _utc(moment: object) -> dt.datetime:
    """Aggregates and raw reads bypass the column type: SQLite hands back naive UTC or text."""
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.fromisoformat(str(moment))
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _buckets(value: object) -> list[int]:
    if isinstance(value, list):
        return value
    found = orjson.loads(str(value)) if value else []
    return found if isinstance(found, list) else []
