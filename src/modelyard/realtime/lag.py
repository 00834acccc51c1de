"""Lag of realtime deployments, and backpressure on ingest beyond a configured lag.

A deployment's lag is what it has not done yet: events of its stream the router has not read,
plus triggers queued and not acknowledged; and the age of the oldest of them. `Backpressure`
decides (pure) whether ingest answers 429 and how long the producer should wait; `LagProbe`
measures every deployment the gateway knows, twice a second, exports it as Prometheus gauges,
and applies the streams' retention to the raw log once a minute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelyard.loops import Loop
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.queue import TriggerQueue
from modelyard.realtime.streams import StreamSpec

PROBE_SECONDS = 0.5
PURGE_SECONDS = 60.0
DEFAULT_MAX_LAG = 100_000


@dataclass(frozen=True)
class Lag:
    events: int = 0
    """Events not yet turned into triggers, plus triggers not yet done."""
    oldest_s: float = 0.0
    """Age of the oldest of them (0 when none)."""


def measure(
    events: EventStore, queue: TriggerQueue, stream: str, deployment: str, now: float
) -> Lag:
    unrouted, oldest_event = events.pending(stream, queue.cursor(deployment))
    queued, oldest_trigger = queue.pending(deployment)
    oldest = min((t for t in (oldest_event, oldest_trigger) if t is not None), default=None)
    return Lag(unrouted + queued, max(0.0, now - oldest) if oldest is not None else 0.0)


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_after_s: int


@dataclass(frozen=True)
class Backpressure:
    limit_events: int = DEFAULT_MAX_LAG
    limit_seconds: float = 0.0
    """0: no limit on the age of the oldest pending event."""

    def check(self, lag: Lag) -> Refusal | None:
        """None to accept; else why not, and when to come back (the time the backlog over the
        limit would take at the rate the oldest event has waited, between 1 and 30 s)."""
        over_count = lag.events > self.limit_events
        over_age = self.limit_seconds > 0 and lag.oldest_s > self.limit_seconds
        if not (over_count or over_age):
            return None
        excess = max(0.0, lag.oldest_s - self.limit_seconds) if over_age else 1.0
        retry = min(30, max(1, math.ceil(excess)))
        what = (
            f"{lag.events} events pending (limit {self.limit_events})"
            if over_count
            else f"the oldest pending event waits {lag.oldest_s:.1f} s "
            f"(limit {self.limit_seconds:g} s)"
        )
        return Refusal(f"a realtime deployment of this stream lags: {what}; retry later", retry)


class LagProbe:
    def __init__(
        self,
        events: EventStore,
        queue: TriggerQueue,
        routes: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.events = events
        self.queue = queue
        self.routes = routes
        """Anything with ``table.realtime`` (the gateway's `Routes`)."""
        self.clock = clock
        self.lags: dict[str, Lag] = {}
        self._streams: dict[str, list[str]] = {}
        self.loop = Loop("realtime-lag", self.probe, interval=PROBE_SECONDS, wait_first=True)
        self._purged = 0.0

    def start(self) -> None:
        self.probe()
        self.loop.start()

    def stop(self) -> None:
        # Not joined: a gateway request that opened new stores stops the old probe.
        self.loop.request_stop()

    def probe(self) -> None:
        config = self.routes.table.realtime
        now = self.clock()
        lags: dict[str, Lag] = {}
        streams: dict[str, list[str]] = {}
        for deployment, item in (config.get("deployments") or {}).items():
            namespace = deployment.partition("/")[0]
            stream = f"{namespace}/{item['stream']}"
            lags[deployment] = measure(self.events, self.queue, stream, deployment, now)
            streams.setdefault(stream, []).append(deployment)
        self.lags, self._streams = lags, streams
        if now - self._purged >= PURGE_SECONDS:
            self._purged = now
            for stream, spec in (config.get("streams") or {}).items():
                retention = StreamSpec.model_validate(spec).retention_s
                self.events.purge(stream, now - retention)

    def lag_of_stream(self, stream: str) -> Lag:
        """The worst lag of the deployments reading ``stream``."""
        found = [self.lags[d] for d in self._streams.get(stream, ()) if d in self.lags]
        if not found:
            return Lag()
        return Lag(max(lag.events for lag in found), max(lag.oldest_s for lag in found))

    def render(self) -> list[str]:
        lines = [
            "# HELP modelyard_realtime_lag_events Events and triggers a deployment has not done.",
            "# TYPE modelyard_realtime_lag_events gauge",
        ]
        for deployment, lag in sorted(self.lags.items()):
            ns, _, name = deployment.partition("/")
            lines.append(
                f'modelyard_realtime_lag_events{{namespace="{ns}",deployment="{name}"}} '
                f"{lag.events}"
            )
        lines += [
            "# HELP modelyard_realtime_lag_seconds Age of the oldest event a deployment has not "
            "done.",
            "# TYPE modelyard_realtime_lag_seconds gauge",
        ]
        for deployment, lag in sorted(self.lags.items()):
            ns, _, name = deployment.partition("/")
            lines.append(
                f'modelyard_realtime_lag_seconds{{namespace="{ns}",deployment="{name}"}} '
                f"{lag.oldest_s:.3f}"
            )
        return lines
