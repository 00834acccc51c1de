"""What the gateway measured, as the control plane keeps it.

The gateway reports, about once a second, what it served since its last report (see
`modelyard.telemetry.window.Window`). Two readers:

- the rollout judge asks what a revision served since a step began (requests, errors, a sample
  of latencies at the gateway and one of the service times its replicas reported): the reports
  of the last ``KEEP_SECONDS`` stay in memory, which is enough for a step and needs no database
  write per report;
- the SLOs want per-deployment counts per minute, durably: reports are summed per minute here and
  handed over in batches (`take_minutes`) to be written. So are the lag samples of realtime
  deployments (`take_lags`), one per report and deployment, named as the gateway knows them.

A report the gateway could not deliver (the control plane was down) is sent again with its
per-deployment counts, its id and the time it was measured, so an outage of the control plane
still counts in the SLOs; the samples of a report taken by a process that died before it judged
them are lost, which costs a rollout step's evidence, never a request.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.telemetry.records import (
    LAG_BUCKETS,
    LagMinute,
    Point,
    Sample,
    TrafficMinute,
    lag_bucket,
)

KEEP_SECONDS = 3600.0
TAKEN_IDS = 8192


@dataclass(frozen=True)
class _Report:
    at: dt.datetime
    requests: int
    errors: int
    mismatches: int
    latencies_ms: list[float]
    service_ms: list[float]


class Measurements:
    def __init__(self, clock: Callable[[], dt.datetime]) -> None:
        self.clock = clock
        self._reports: dict[str, deque[_Report]] = {}
        self._minutes: dict[tuple[str, dt.datetime], TrafficMinute] = {}
        self._lags: dict[tuple[str, dt.datetime], LagMinute] = {}
        self._lock = threading.Lock()
        self._taken: dict[str, None] = {}
        """Ids of the latest reports, oldest first."""
        self.started = clock()
        """Reports before this moment were lost with the previous control plane process."""

    def add(self, traffic: dict[str, Any]) -> None:
        """Take one report of the gateway (malformed parts are ignored: it is only measurement).

        A report sent again (the gateway did not hear that this process took it) is dropped by
        its ``id``; one measured while the control plane was down counts in the minute of its
        ``at``, not of its arrival."""
        now = self.clock()
        report_id = traffic.get("id")
        at = traffic.get("at")
        measured = now
        if isinstance(at, int | float) and 0 < now.timestamp() - at < KEEP_SECONDS * 24:
            measured = dt.datetime.fromtimestamp(at, now.tzinfo)
        minute = measured.replace(second=0, microsecond=0)
        horizon = now - dt.timedelta(seconds=KEEP_SECONDS)
        with self._lock:
            if isinstance(report_id, str):
                if report_id in self._taken:
                    return
                self._taken[report_id] = None
                while len(self._taken) > TAKEN_IDS:
                    del self._taken[next(iter(self._taken))]
            for revision_id, served in traffic.get("revisions", {}).items():
                if not isinstance(served, dict) or not served.get("requests"):
                    continue
                reports = self._reports.setdefault(revision_id, deque())
                reports.append(
                    _Report(
                        now,
                        int(served["requests"]),
                        int(served.get("errors", 0)),
                        int(served.get("mismatches", 0)),
                        [float(v) for v in served.get("latencies_ms", [])],
                        # absent from a gateway that predates service times
                        [float(v) for v in served.get("service_ms") or []],
                    )
                )
                while reports and reports[0].at < horizon:
                    reports.popleft()
            for deployment_id, counts in traffic.get("deployments", {}).items():
                if not isinstance(counts, dict) or not counts.get("requests"):
                    continue
                self._merge(
                    TrafficMinute(
                        deployment_id,
                        minute,
                        int(counts["requests"]),
                        int(counts.get("errors", 0)),
                        [int(b) for b in counts.get("buckets", [])],
                    )
                )
            lags = traffic.get("lags")
            for deployment, lag in (lags if isinstance(lags, dict) else {}).items():
                oldest_s = lag.get("oldest_s") if isinstance(lag, dict) else None
                if not isinstance(oldest_s, int | float) or oldest_s < 0:
                    continue
                buckets = [0] * (len(LAG_BUCKETS) + 1)
                buckets[lag_bucket(float(oldest_s))] = 1
                self._merge_lag(LagMinute(str(deployment), minute, 1, buckets))

    def served(
        self, revision_id: str, since: dt.datetime, until: dt.datetime | None = None
    ) -> Sample:
        """What ``revision_id`` served from ``since`` until ``until`` (latencies and service
        times: the reports' samples, each report's sample uniform over its requests)."""
        sample = Sample()
        with self._lock:
            for r in self._reports.get(revision_id, ()):
                if r.at >= since and (until is None or r.at < until):
                    sample.requests += r.requests
                    sample.errors += r.errors
                    sample.mismatches += r.mismatches
                    sample.latencies_ms.extend(r.latencies_ms)
                    sample.service_ms.extend(r.service_ms)
        return sample

    def points(
        self, revision_id: str, since: dt.datetime, until: dt.datetime | None = None
    ) -> list[Point]:
        """Each report about ``revision_id`` from ``since`` until ``until``, oldest first."""
        with self._lock:
            return [
                Point(
                    r.at,
                    Sample(
                        r.requests,
                        r.errors,
                        list(r.latencies_ms),
                        list(r.service_ms),
                        r.mismatches,
                    ),
                )
                for r in self._reports.get(revision_id, ())
                if r.at >= since and (until is None or r.at < until)
            ]

    def take_minutes(self) -> list[TrafficMinute]:
        """The per-minute counts gathered since the last call, to be written for the SLOs."""
        with self._lock:
            minutes, self._minutes = list(self._minutes.values()), {}
        return minutes

    def take_lags(self) -> list[LagMinute]:
        """The per-minute lag samples gathered since the last call, to be written for the SLOs."""
        with self._lock:
            lags, self._lags = list(self._lags.values()), {}
        return lags

    def put_back(self, minutes: list[TrafficMinute], lags: Sequence[LagMinute] = ()) -> None:
        """Counts and lag samples that could not be written, to be taken again with the next."""
        with self._lock:
            for served in minutes:
                self._merge(served)
            for lag in lags:
                self._merge_lag(lag)

    def _merge_lag(self, lag: LagMinute) -> None:
        key = (lag.deployment, lag.minute)
        total = self._lags.get(key)
        self._lags[key] = lag if total is None else total.plus(lag)

    def _merge(self, served: TrafficMinute) -> None:
        key = (served.deployment_id, served.minute)
        total = self._minutes.get(key)
        self._minutes[key] = served if total is None else total.plus(served)
