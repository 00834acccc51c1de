"""`Telemetry`: the one way the control plane reads what the gateway measured.

Two sources, one range query. A revision's ranges come from the gateway's reports of the last
hour, kept in memory (`Measurements`): counts and latency samples, what the rollout judge and the
dashboard's live figures need. A deployment's ranges (``revision=None``) come from the stored
per-minute counts (`Minutes`): counts and latency buckets over days, what the SLOs and the
dashboard's charts need. Both answer with the same records (`Sample`, `Point`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, TypeVar

from modelyard.store.db import Database
from modelyard.telemetry.measurements import Measurements
from modelyard.telemetry.minutes import Minutes
from modelyard.telemetry.records import Point, Sample, TrafficMinute

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


class Telemetry:
    def __init__(self, db: Database, clock: Callable[[], dt.datetime]) -> None:
        self.clock = clock
        self.measurements = Measurements(clock)
        self.minutes = Minutes(db)

    # writing ------------------------------------------------------------------------------------
    def add(self, report: dict[str, Any]) -> None:
        """Take one report of the gateway (`modelyard.telemetry.window.Window.report`)."""
        self.measurements.add(report)

    def record(self, minutes: Iterable[TrafficMinute]) -> int:
        """Add per-minute counts into the stored minutes; returns the minutes kept (those of
        deployments that still exist)."""
        return self.minutes.record(minutes)

    def flush(self) -> int:
        """Write the per-minute counts gathered since the last flush: one write per deployment
        and minute-part, not per gateway report. Counts whose write failed are kept for the next
        flush. Lag samples go with them, into the minutes of the deployments they name. Returns
        the minutes written."""
        minutes, lags = self.measurements.take_minutes(), self.measurements.take_lags()
        if not minutes and not lags:
            return 0
        try:
            return self.record([*minutes, *self.minutes.resolve(lags)])
        except Exception:
            log.exception("writing %d traffic minutes failed; retried later", len(minutes))
            self.measurements.put_back(minutes, lags)
            return 0

    def prune(self, cutoffs: Mapping[str, dt.datetime]) -> int:
        """Delete each deployment's stored minutes before its cutoff."""
        return self.minutes.prune(cutoffs)

    # reading ------------------------------------------------------------------------------------
    @property
    def started(self) -> dt.datetime:
        """Revision ranges before this moment are empty: the reports were lost with the previous
        control plane process."""
        return self.measurements.started

    def oldest(self) -> dict[str, dt.datetime]:
        """The first stored minute of each deployment that has any."""
        return self.minutes.oldest()

    def series(
        self,
        deployment_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        revision: str | None = None,
        step: dt.timedelta | None = None,
    ) -> list[Point]:
        """What was served from ``since`` until ``until`` (open: up to now), oldest first: one
        point per gateway report of ``revision`` (the last hour) or per stored minute of the
        deployment, or with ``step`` one point per step from ``since`` on (empty steps left out).
        """
        if step is not None and step <= dt.timedelta(0):
            raise ValueError(f"step {step} must be positive")
        if revision is None:
            if step is None:
                return self.minutes.read(deployment_id, since, until)
            return self.minutes.steps(deployment_id, since, step, until)
        points = self.measurements.points(revision, since, until)
        if step is None:
            return points
        steps: dict[int, Point] = {}
        for point in points:
            n = int((point.at - since) / step)
            found = steps.get(n)
            if found is None:
                steps[n] = found = Point(since + n * step, Sample())
            found.served.add(point.served)
        return list(steps.values())

    def totals(
        self,
        deployment_id: str,
        *,
        since: dt.datetime,
        until: dt.datetime | None = None,
        revision: str | None = None,
    ) -> Sample:
        """What was served from ``since`` until ``until`` (open: up to now), all of it added up:
        by ``revision`` (samples, from the last hour) or by the deployment (buckets, stored)."""
        if revision is not None:
            return self.measurements.served(revision, since, until)
        return self.windows(deployment_id, {0: since}, until)[0]

    def windows(
        self,
        deployment_id: str,
        starts: Mapping[K, dt.datetime],
        until: dt.datetime | None = None,
        *,
        buckets: bool = True,
        lag: bool = False,
    ) -> dict[K, Sample]:
        """`totals` of the deployment over several ranges ending together, in one read (the SLOs'
        alert windows); ``buckets=False`` leaves the latency buckets out, which is cheaper, and
        ``lag=True`` adds the lag samples."""
        return self.minutes.sums(deployment_id, starts, until, buckets=buckets, lag=lag)
