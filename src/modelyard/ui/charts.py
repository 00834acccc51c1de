"""Charts as SVG, drawn on the server from per-minute counts: no chart library, no script.

Pure functions of their input (the minutes and a time range), so 30 days of minute data is a
sum into at most ``MAX_POINTS`` buckets, then a polyline per series.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from modelyard.telemetry.records import BUCKETS

RANGES: dict[str, dt.timedelta] = {
    "5m": dt.timedelta(minutes=5),
    "1h": dt.timedelta(hours=1),
    "6h": dt.timedelta(hours=6),
    "24h": dt.timedelta(days=1),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
}
DEFAULT_RANGE = "1h"
MAX_POINTS = 240
FEW_POINTS = 3
WIDTH, HEIGHT, PAD = 420.0, 150.0, 26.0


@dataclass(frozen=True)
class Minute:
    """What one deployment served in one minute (a row of ``traffic_minutes``)."""

    at: dt.datetime
    requests: int
    errors: int
    buckets: Sequence[int]


@dataclass(frozen=True)
class Marker:
    at: dt.datetime
    label: str
    kind: str
    """``revision``, ``rollout`` or ``alert``: the CSS class of its line."""


@dataclass
class Series:
    name: str
    points: str
    """SVG polyline points."""
    last: float | None
    dots: list[tuple[float, float]] = field(default_factory=list)
    """Points drawn as dots too: a series of few points has no line to show."""


@dataclass
class Chart:
    title: str
    unit: str
    peak: float
    series: list[Series] = field(default_factory=list)
    markers: list[tuple[float, str, str]] = field(default_factory=list)
    """(x, label, kind) of each marker inside the range."""
    width: float = WIDTH
    height: float = HEIGHT
    pad: float = PAD


def percentile(buckets: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile in milliseconds from a latency histogram (per bucket, not cumulative;
    the last bucket is above every bound): the bound of the bucket it falls in."""
    total = sum(buckets)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            bound = BUCKETS[i] if i < len(BUCKETS) else BUCKETS[-1] * 2
            return bound * 1000
    return BUCKETS[-1] * 2000


def step_of(span: dt.timedelta) -> dt.timedelta:
    """How wide one point of a chart over ``span`` is: a minute at least, MAX_POINTS at most."""
    return max(span / MAX_POINTS, dt.timedelta(minutes=1))


def charts(
    minutes: Sequence[Minute], markers: Sequence[Marker], end: dt.datetime, span: dt.timedelta
) -> list[Chart]:
    """Requests per second, errors per second and latency percentiles over ``span`` to ``end``."""
    start = end - span
    step = step_of(span)
    count = max(1, int(span / step))
    # Summed with numpy (already summed per step by the database when read with `step_of`).
    kept = [m for m in minutes if start <= m.at < end]
    index = np.array(
        [min(count - 1, int((m.at - start) / step)) for m in kept], dtype=np.int64
    ).reshape(-1)
    width = max((len(m.buckets) for m in kept), default=0)
    requests = np.zeros(count)
    errors = np.zeros(count)
    buckets = np.zeros((count, width))
    if kept:
        np.add.at(requests, index, [m.requests for m in kept])
        np.add.at(errors, index, [m.errors for m in kept])
        table = np.zeros((len(kept), width))
        for row, m in enumerate(kept):
            table[row, : len(m.buckets)] = m.buckets
        np.add.at(buckets, index, table)
    seconds = step.total_seconds()
    qps: list[float | None] = list((requests / seconds).tolist())
    eps: list[float | None] = list((errors / seconds).tolist())
    latency = {
        q: [percentile([int(c) for c in b], q) for b in buckets.tolist()] for q in (0.5, 0.95, 0.99)
    }
    placed = [
        (_x(mk.at, start, span), mk.label, mk.kind) for mk in markers if start <= mk.at <= end
    ]
    return [
        _chart("Requests per second", "req/s", {"qps": qps}, placed),
        _chart("Errors per second", "err/s", {"errors": eps}, placed),
        _chart(
            "Latency percentiles",
            "ms",
            {"p50": latency[0.5], "p95": latency[0.95], "p99": latency[0.99]},
            placed,
        ),
    ]


def by_revision(
    reports: dict[str, Sequence[tuple[dt.datetime, int, int, Sequence[float]]]],
    markers: Sequence[Marker],
    end: dt.datetime,
    span: dt.timedelta,
) -> list[Chart]:
    """Requests per second, error share and p99 of each revision (one series each) from the
    gateway's reports: (when, requests, errors, latency sample in ms)."""
    start = end - span
    count = min(MAX_POINTS, max(1, int(span.total_seconds() // 5)))
    step = span / count
    seconds = step.total_seconds()
    qps: dict[str, list[float | None]] = {}
    errors: dict[str, list[float | None]] = {}
    p99: dict[str, list[float | None]] = {}
    for name, points in reports.items():
        requests, failed = [0] * count, [0] * count
        samples: list[list[float]] = [[] for _ in range(count)]
        for at, served, bad, latencies in points:
            if start <= at < end:
                i = min(count - 1, int((at - start) / step))
                requests[i] += served
                failed[i] += bad
                samples[i].extend(latencies)
        qps[name] = [r / seconds for r in requests]
        errors[name] = [f / r if r else None for f, r in zip(failed, requests, strict=True)]
        p99[name] = [_quantile(s, 0.99) for s in samples]
    placed = [
        (_x(mk.at, start, span), mk.label, mk.kind) for mk in markers if start <= mk.at <= end
    ]
    return [
        _chart("Requests per second, per revision", "req/s", qps, placed),
        _chart("Error share, per revision", "", errors, placed),
        _chart("p99 latency, per revision", "ms", p99, placed),
    ]


def _quantile(sample: list[float], q: float) -> float | None:
    if not sample:
        return None
    ordered = sorted(sample)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _x(at: dt.datetime, start: dt.datetime, span: dt.timedelta) -> float:
    return PAD + (WIDTH - 2 * PAD) * ((at - start) / span)


def _chart(
    title: str,
    unit: str,
    values: Mapping[str, Sequence[float | None]],
    markers: list[tuple[float, str, str]],
) -> Chart:
    peak = max((v for vs in values.values() for v in vs if v is not None), default=0.0)
    top = peak or 1.0
    chart = Chart(title=title, unit=unit, peak=peak, markers=markers)
    for name, vs in values.items():
        n = len(vs)
        xy = [
            (
                round(PAD + (WIDTH - 2 * PAD) * (i + 0.5) / n, 1),
                round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v / top), 1),
            )
            for i, v in enumerate(vs)
            if v is not None
        ]
        last = next((v for v in reversed(vs) if v is not None), None)
        chart.series.append(
            Series(
                name=name,
                points=" ".join(f"{x},{y}" for x, y in xy),
                last=last,
                dots=xy if len(xy) <= FEW_POINTS else [],
            )
        )
    return chart
