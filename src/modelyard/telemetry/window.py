"""The gateway's window: what it served since its last report to the control plane.

The gateway sends the report about once a second (`modelyard.gateway.routes.Sync`); the control
plane keeps it (`modelyard.telemetry.measurements`) for the rollout judge, the SLOs and the
dashboard. The gateway is one asyncio loop, so plain dicts suffice (no locks on the request path).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelyard.telemetry.records import BUCKETS

SAMPLES_PER_REPORT = 1000


@dataclass
class _Served:
    requests: int = 0
    errors: int = 0
    mismatches: int = 0
    timed: int = 0
    latencies_ms: list[float] | None = None
    reported: int = 0
    service_ms: list[float] | None = None


class Window:
    """What the control plane judges rollouts and SLOs on, since the last report.

    Per revision: requests, 5xx errors, a uniform sample of the successful requests' latencies
    (reservoir sampling keeps the report small under any load), a uniform sample of the service
    times the replicas reported for them (their own time on the request, without the queue in
    front of them: what the canary judge compares) and, for a shadow revision, answers that
    differed from the primary's. Per deployment: requests, errors and requests per latency
    bucket. Per realtime deployment (``namespace/name``), when ``lags`` is set: its lag as the
    report is taken (events pending, age in seconds of the oldest), one sample per report.
    """

    def __init__(self) -> None:
        self.revisions: dict[str, _Served] = {}
        self.deployments: dict[str, list[int]] = {}
        self.lags: Callable[[], Mapping[str, tuple[int, float]]] | None = None
        """Where the current lag of each realtime deployment is read from (the gateway's probe)."""

    def observe(
        self,
        deployment_id: str,
        revision_id: str | None,
        status: int,
        seconds: float,
        *,
        mismatch: bool = False,
        service_ms: float | None = None,
    ) -> None:
        error = status >= 500
        if deployment_id:
            counts = self.deployments.get(deployment_id)
            if counts is None:
                counts = self.deployments[deployment_id] = [0] * (len(BUCKETS) + 3)
            counts[0] += 1
            counts[1] += error
            counts[2 + bisect.bisect_left(BUCKETS, seconds)] += 1
        if revision_id is None:
            return
        served = self.revisions.get(revision_id)
        if served is None:
            served = self.revisions[revision_id] = _Served(latencies_ms=[], service_ms=[])
        served.requests += 1
        served.errors += error
        served.mismatches += mismatch
        if error:  # the judge compares the latency of answers, not of failures
            return
        served.timed += 1
        assert served.latencies_ms is not None and served.service_ms is not None
        _keep(served.latencies_ms, served.timed, round(seconds * 1000, 3))
        if service_ms is not None:
            served.reported += 1
            _keep(served.service_ms, served.reported, service_ms)

    def report(self) -> dict[str, Any]:
        report = {
            "revisions": {
                revision_id: {
                    "requests": s.requests,
                    "errors": s.errors,
                    "mismatches": s.mismatches,
                    "latencies_ms": s.latencies_ms,
                    "service_ms": s.service_ms,
                }
                for revision_id, s in self.revisions.items()
            },
            "deployments": {
                deployment_id: {"requests": c[0], "errors": c[1], "buckets": c[2:]}
                for deployment_id, c in self.deployments.items()
            },
        }
        if self.lags is not None:
            report["lags"] = {
                deployment: {"events": events, "oldest_s": round(oldest_s, 3)}
                for deployment, (events, oldest_s) in self.lags().items()
            }
        self.revisions, self.deployments = {}, {}
        return report


def _keep(sample: list[float], seen: int, value: float) -> None:
    """Reservoir sampling: after ``seen`` values, ``sample`` is a uniform choice of them."""
    if len(sample) < SAMPLES_PER_REPORT:
        sample.append(value)
    else:
        slot = random.randrange(seen)
        if slot < SAMPLES_PER_REPORT:
            sample[slot] = value
