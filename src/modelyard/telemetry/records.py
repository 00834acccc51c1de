"""The values telemetry hands out: what was served over a range, and the stored minute.

Plain dataclasses (no database, no numpy): the gateway, the judge, the SLOs and the dashboard
all read them.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass, field

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds in seconds of the gateway's latency buckets (Prometheus' ``le``): the histogram
it exports and the per-minute counts the SLOs judge latency objectives on."""
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Upper bounds in seconds of the lag buckets: each lag sample of a realtime deployment (the age
of its oldest pending event, about once a second) counts in the first bucket it fits, the last one
above them. What lag objectives are judged on."""
MINUTE = dt.timedelta(minutes=1)


def floor_minute(moment: dt.datetime) -> dt.datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass
class Sample:
    """What was served over one range: by one revision (from the gateway's reports of the last
    hour: latency samples, no buckets) or by a whole deployment (from the stored minutes:
    latency buckets, no samples)."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    """Of successful requests, at the gateway: a fast error must not make a failing canary look
    fast."""
    service_ms: list[float] = field(default_factory=list)
    """Of successful requests whose replica reported its service time."""
    mismatches: int = 0
    """Of a shadow revision: answers that differed from the primary's."""
    buckets: list[int] = field(default_factory=list)
    """Requests per latency bucket of `BUCKETS` (not cumulative; the last one above them)."""
    lag_samples: int = 0
    """Of a realtime deployment: lag samples taken (about one a second while the gateway runs)."""
    lag_buckets: list[int] = field(default_factory=list)
    """Lag samples per bucket of `LAG_BUCKETS` (not cumulative; the last one above them)."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def add(self, other: Sample) -> None:
        """Add ``other``'s counts and samples into this one (bucket lists of any length)."""
        self.requests += other.requests
        self.errors += other.errors
        self.mismatches += other.mismatches
        self.latencies_ms.extend(other.latencies_ms)
        self.service_ms.extend(other.service_ms)
        self.buckets = _sum(self.buckets, other.buckets)
        self.lag_samples += other.lag_samples
        self.lag_buckets = _sum(self.lag_buckets, other.lag_buckets)


@dataclass(frozen=True)
class Point:
    """One step of a series: what was served from ``at`` on, for the step's length (one gateway
    report when the series has no step)."""

    at: dt.datetime
    served: Sample


@dataclass(frozen=True)
class TrafficMinute:
    """What the gateway served for one deployment in one minute (``buckets``: requests per latency
    bucket of `BUCKETS`, not cumulative, the last one above them) and, for a realtime deployment,
    the lag samples it took (``lag_buckets``: per bucket of `LAG_BUCKETS`)."""

    deployment_id: str
    minute: dt.datetime
    requests: int
    errors: int
    buckets: list[int]
    lag_samples: int = 0
    lag_buckets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.minute.tzinfo is None:
            raise ValueError("naive minute: pass an aware UTC datetime")
        object.__setattr__(self, "minute", floor_minute(self.minute.astimezone(dt.UTC)))

    def plus(self, other: TrafficMinute) -> TrafficMinute:
        """Both counts of the same minute added up (bucket lists of any length)."""
        return TrafficMinute(
            self.deployment_id,
            self.minute,
            self.requests + other.requests,
            self.errors + other.errors,
            _sum(self.buckets, other.buckets),
            self.lag_samples + other.lag_samples,
            _sum(self.lag_buckets, other.lag_buckets),
        )


@dataclass(frozen=True)
class LagMinute:
    """Lag samples of one realtime deployment, named ``namespace/name`` as the gateway knows it,
    in one minute: how many, and how many per bucket of `LAG_BUCKETS`."""

    deployment: str
    minute: dt.datetime
    samples: int
    buckets: list[int]

    def plus(self, other: LagMinute) -> LagMinute:
        return LagMinute(
            self.deployment,
            self.minute,
            self.samples + other.samples,
            _sum(self.buckets, other.buckets),
        )


def lag_bucket(oldest_s: float) -> int:
    """The bucket of `LAG_BUCKETS` a lag sample counts in (a sample at a bound counts in it, as
    Prometheus' ``le`` does)."""
    return bisect.bisect_left(LAG_BUCKETS, oldest_s)


def _sum(ours: list[int], theirs: list[int]) -> list[int]:
    width = max(len(ours), len(theirs))
    return [
        a + b
        for a, b in zip(
            [*ours, *[0] * (width - len(ours))],
            [*theirs, *[0] * (width - len(theirs))],
            strict=True,
        )
    ]
