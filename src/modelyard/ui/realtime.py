"""What the realtime screen shows of a namespace, read from the realtime stores the gateway and the
workers write: each stream's events/s and lag, each realtime deployment's lag and
trigger-to-prediction latency.

Rates and latencies come from the newest events of each stream (at most ``SAMPLE`` of them): an
event's ``ingested_at`` is when the gateway took it, a prediction's ``written_at`` when the worker
stored what that event triggered. Nothing is kept between pages: every figure is read again.
A store that cannot be read leaves its figures empty (shown as a dash) instead of failing the page.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

from modelyard.controlplane import ControlPlane
from modelyard.errors import ModelyardError
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.lag import Lag, measure
from modelyard.realtime.predictions import PredictionStore
from modelyard.realtime.streams import RawEvent

WINDOW_SECONDS = 60.0
"""Events/s and latencies are over this many seconds."""
SAMPLE = 2000
"""The newest events read per stream: past that rate, events/s is estimated from them."""
MAX_ENTITIES = 1000
NONE = "\u2013"  # an en dash: no value
_READ_ERRORS = (ModelyardError, OSError, LookupError, ValueError)


@dataclass(frozen=True)
class StreamFigures:
    name: str
    created_at: dt.datetime | None
    events_per_s: float | None
    lag_events: int | None
    """The worst of the realtime deployments reading it (None: none does, or unreadable)."""
    lag_s: float | None


@dataclass(frozen=True)
class DeploymentFigures:
    name: str
    stream: str
    status: str
    lag_events: int | None
    lag_s: float | None
    predictions: int
    """Predictions of the last ``WINDOW_SECONDS`` whose latency is measured."""
    latency_p50_ms: float | None
    """From the trigger event's ingest to its stored prediction."""
    latency_p99_ms: float | None


@dataclass(frozen=True)
class Figures:
    streams: list[StreamFigures]
    deployments: list[DeploymentFigures]


def figures(plane: ControlPlane, namespace: str) -> Figures:
    """The realtime screen of ``namespace`` (its streams and realtime deployments)."""
    now = plane.events.clock().timestamp()
    stores = plane.realtime_stores
    recent: dict[str, list[RawEvent]] = {}
    rates: dict[str, float | None] = {}
    streams = plane.catalog.list_streams(namespace)
    for stream in streams:
        key = f"{namespace}/{stream.name}"
        recent[key], rates[key] = [], None
        with contextlib.suppress(*_READ_ERRORS):
            recent[key], rates[key] = _recent(stores.events, key, now)
    shown: list[DeploymentFigures] = []
    lags: dict[str, list[Lag]] = {}
    for info in plane.catalog.list_deployments(namespace):
        source = f"{namespace}/{info.spec.stream}"
        lag: Lag | None = None
        with contextlib.suppress(*_READ_ERRORS):
            lag = measure(stores.events, stores.queue, source, info.key, now)
            lags.setdefault(info.spec.stream, []).append(lag)
        latencies: list[float] = []
        with contextlib.suppress(*_READ_ERRORS):
            latencies = _latencies(stores.predictions, info.key, recent.get(source, []), now)
        shown.append(
            DeploymentFigures(
                name=info.name,
                stream=info.spec.stream,
                status=info.status,
                lag_events=lag.events if lag else None,
                lag_s=lag.oldest_s if lag else None,
                predictions=len(latencies),
                latency_p50_ms=_quantile(latencies, 0.5),
                latency_p99_ms=_quantile(latencies, 0.99),
            )
        )
    return Figures(
        streams=[
            StreamFigures(
                name=s.name,
                created_at=s.created_at,
                events_per_s=rates[f"{namespace}/{s.name}"],
                lag_events=max((lag.events for lag in lags.get(s.name, [])), default=None),
                lag_s=max((lag.oldest_s for lag in lags.get(s.name, [])), default=None),
            )
            for s in streams
        ],
        deployments=shown,
    )


def _recent(events: EventStore, stream: str, now: float) -> tuple[list[RawEvent], float]:
    """The stream's events of the last ``WINDOW_SECONDS`` (its newest ``SAMPLE`` at most) and
    its events/s over them."""
    last = events.last_seq(stream)
    after = max(0, last - SAMPLE)
    sample = events.read(stream, after, SAMPLE)
    start = now - WINDOW_SECONDS
    inside = [e for e in sample if e.ingested_at >= start]
    covered = after == 0 or len(inside) < len(sample)  # the sample reaches back past the window
    span = WINDOW_SECONDS if covered or not inside else max(1.0, now - inside[0].ingested_at)
    return inside, len(inside) / span


def _latencies(
    predictions: PredictionStore, deployment: str, recent: list[RawEvent], now: float
) -> list[float]:
    """Milliseconds from each recent event's ingest to the prediction it triggered, for the
    events whose entity's latest prediction is theirs."""
    ingested = {e.seq: e.ingested_at for e in recent}
    entities = list(dict.fromkeys(e.entity for e in reversed(recent)))[:MAX_ENTITIES]
    if not entities:
        return []
    latest = predictions.latest(deployment, entities, now)
    return sorted(
        1000 * max(0.0, p.written_at - ingested[p.seq])
        for p in latest.values()
        if p.seq in ingested
    )


def _quantile(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def values(found: Figures) -> dict[str, str]:
    """The figures as the page shows them, keyed as its live values name them (the live stream
    sends them again as they change)."""
    shown: dict[str, str] = {}
    for s in found.streams:
        key = f"realtime/stream/{s.name}"
        shown[f"{key}:events_per_s"] = _num(s.events_per_s, "{:.2f}")
        shown[f"{key}:lag_events"] = _num(s.lag_events, "{}")
        shown[f"{key}:lag_s"] = _num(s.lag_s, "{:.1f} s")
    for d in found.deployments:
        key = f"realtime/deployment/{d.name}"
        shown[f"{key}:lag_events"] = _num(d.lag_events, "{}")
        shown[f"{key}:lag_s"] = _num(d.lag_s, "{:.1f} s")
        shown[f"{key}:predictions"] = str(d.predictions)
        shown[f"{key}:p50"] = _num(d.latency_p50_ms, "{:.1f} ms")
        shown[f"{key}:p99"] = _num(d.latency_p99_ms, "{:.1f} ms")
    return shown


def _num(value: float | None, form: str) -> str:
    return NONE if value is None else form.format(value)
