"""What the gateway measures for itself: Prometheus metrics, and concurrency for the autoscaler
(what it reports for rollouts and SLOs is `modelyard.telemetry.window`).

The gateway is one asyncio loop, so plain dicts suffice (no locks on the request path).
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from dataclasses import dataclass

from modelyard.telemetry.records import BUCKETS

Labels = tuple[str, str, str]  # namespace, deployment, revision


@dataclass
class _Histogram:
    counts: list[int]
    total: float = 0.0
    count: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, str, int], int] = defaultdict(int)
        self.latency: dict[Labels, _Histogram] = {}
        self.in_flight: defaultdict[Labels, int] = defaultdict(int)
        self.retries: defaultdict[Labels, int] = defaultdict(int)
        self.cold_starts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.shadow: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)

    def observe(self, labels: Labels, code: int, seconds: float) -> None:
        self.requests[(*labels, code)] += 1
        histogram = self.latency.get(labels)
        if histogram is None:
            histogram = self.latency[labels] = _Histogram([0] * len(BUCKETS))
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            histogram.counts[index] += 1
        histogram.total += seconds
        histogram.count += 1

    def render(self) -> bytes:
        lines = [
            "# HELP modelyard_requests_total Inference requests by answer code.",
            "# TYPE modelyard_requests_total counter",
        ]
        for (ns, dep, rev, code), value in sorted(self.requests.items()):
            lines.append(
                f'modelyard_requests_total{{namespace="{_escape(ns)}",deployment="{_escape(dep)}",'
                f'revision="{_escape(rev)}",code="{code}"}} {value}'
            )
        lines += [
            "# HELP modelyard_request_duration_seconds Time from request to answer at the gateway.",
            "# TYPE modelyard_request_duration_seconds histogram",
        ]
        for labels, histogram in sorted(self.latency.items()):
            base = _labels(labels)
            cumulative = 0
            for bound, count in zip(BUCKETS, histogram.counts, strict=True):
                cumulative += count
                lines.append(
                    f'modelyard_request_duration_seconds_bucket{{{base},le="{bound}"}} {cumulative}'
                )
            lines.append(
                f'modelyard_request_duration_seconds_bucket{{{base},le="+Inf"}} {histogram.count}'
            )
            lines.append(f"modelyard_request_duration_seconds_sum{{{base}}} {histogram.total}")
            lines.append(f"modelyard_request_duration_seconds_count{{{base}}} {histogram.count}")
        lines += [
            "# HELP modelyard_requests_in_flight Requests being answered now.",
            "# TYPE modelyard_requests_in_flight gauge",
        ]
        for labels, value in sorted(self.in_flight.items()):
            lines.append(f"modelyard_requests_in_flight{{{_labels(labels)}}} {value}")
        lines += [
            "# HELP modelyard_retries_total Requests sent again to another replica.",
            "# TYPE modelyard_retries_total counter",
        ]
        for labels, value in sorted(self.retries.items()):
            lines.append(f"modelyard_retries_total{{{_labels(labels)}}} {value}")
        lines += [
            "# HELP modelyard_cold_starts_total Requests that waited for a replica to start.",
            "# TYPE modelyard_cold_starts_total counter",
        ]
        for (ns, dep), value in sorted(self.cold_starts.items()):
            lines.append(
                f'modelyard_cold_starts_total{{namespace="{_escape(ns)}",'
                f'deployment="{_escape(dep)}"}} {value}'
            )
        lines += [
            "# HELP modelyard_shadow_requests_total Copies sent to a shadow revision, by result.",
            "# TYPE modelyard_shadow_requests_total counter",
        ]
        for (ns, dep, rev, result), value in sorted(self.shadow.items()):
            base = _labels((ns, dep, rev))
            lines.append(f'modelyard_shadow_requests_total{{{base},result="{result}"}} {value}')
        return ("\n".join(lines) + "\n").encode()


def _labels(labels: Labels) -> str:
    ns, dep, rev = labels
    return f'namespace="{_escape(ns)}",deployment="{_escape(dep)}",revision="{_escape(rev)}"'


class Concurrency:
    """Time-weighted average of in-flight requests per revision between two reports: what
    Knative's queue-proxy measures, which the KPA divides by the target per replica."""

    def __init__(self) -> None:
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self._area: defaultdict[str, float] = defaultdict(float)
        self._changed: dict[str, float] = {}
        self._requests: defaultdict[str, int] = defaultdict(int)
        self._since = time.monotonic()

    def _account(self, revision: str, now: float) -> None:
        last = self._changed.get(revision, self._since)
        self._area[revision] += self.in_flight[revision] * (now - max(last, self._since))
        self._changed[revision] = now

    def begin(self, revision: str) -> None:
        self._account(revision, time.monotonic())
        self.in_flight[revision] += 1
        self._requests[revision] += 1

    def end(self, revision: str) -> None:
        self._account(revision, time.monotonic())
        self.in_flight[revision] -= 1

    def report(self, revisions: list[str]) -> dict[str, tuple[float, int]]:
        """Average concurrency and request count per revision since the last report (every
        routed revision, idle ones with zeros: the autoscaler needs those to scale to zero)."""
        now = time.monotonic()
        elapsed = max(now - self._since, 1e-6)
        result = {}
        for revision in set(revisions) | set(self._area) | set(self._requests):
            self._account(revision, now)
            result[revision] = (self._area[revision] / elapsed, self._requests[revision])
        self._area.clear()
        self._requests.clear()
        self._since = now
        for revision in [r for r, n in self.in_flight.items() if n == 0]:
            del self.in_flight[revision]
            self._changed.pop(revision, None)
        return result
