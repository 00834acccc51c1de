"""The canary judge: is the new revision worse than the stable one, on what both served?

It compares the two revisions on the requests the gateway measured during one rollout step, as
Kayenta's judge does: latency with a one-sided Mann-Whitney U test (no assumption on the shape of
latency distributions, which are skewed and heavy-tailed) plus an effect size, so that a tiny but
significant slowdown on many requests does not fail a step; error rate with a threshold on the
difference of the two rates. Too few requests on either side is ``inconclusive``, never a pass.

Latency is the replicas' own service time when both revisions reported it (enough of it): what a
replica spends on a request, without the queue in front of it. The gateway's end-to-end time holds
that queue, which depends on how much traffic a revision's replicas take: a stable revision taking
90% of the traffic on one replica queues, a canary taking 10% does not, and a slower canary then
looks faster. A revision whose replicas report nothing (a runtime's own routes, replicas older
than the report) is judged on end-to-end time, both sides alike; the evidence says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.serving.records import Analysis
from modelyard.telemetry.records import Sample

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
SERVICE, END_TO_END = "service", "end_to_end"
MIN_LATENCIES = 20


@dataclass(frozen=True)
class Verdict:
    result: str  # pass | fail | inconclusive
    reasons: list[str]
    evidence: dict[str, Any]


def mann_whitney_greater(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, float]:
    """U statistic of ``x`` and the one-sided p-value of "``x`` tends to be larger than ``y``".

    Normal approximation with tie correction and continuity correction (scipy's "asymptotic"
    method), which is accurate for the sample sizes a rollout step has (tens and more).
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_values = both[order]
    # Average ranks over runs of ties.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(both)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    n = n1 + n2
    ties = (ends - starts).astype(np.float64)
    variance = n1 * n2 / 12 * ((n + 1) - float((ties**3 - ties).sum()) / (n * (n - 1) or 1))
    if variance <= 0:  # every value equal: no evidence either way
        return u, 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return u, 0.5 * math.erfc(z / math.sqrt(2))


def judge(stable: Sample, canary: Sample, analysis: Analysis) -> Verdict:
    """The step's verdict, with the figures it was drawn from."""
    evidence: dict[str, Any] = {
        "stable": {"requests": stable.requests, "errors": stable.errors},
        "canary": {"requests": canary.requests, "errors": canary.errors},
    }
    short = [
        f"{name} served {sample.requests} of the {analysis.min_requests} requests needed"
        for name, sample in (("canary", canary), ("stable", stable))
        if sample.requests < analysis.min_requests
    ]
    if short:
        return Verdict(INCONCLUSIVE, short, evidence)
    reasons: list[str] = []
    failed = False
    increase = canary.error_rate - stable.error_rate
    evidence["error_rate"] = {
        "stable": stable.error_rate,
        "canary": canary.error_rate,
        "increase": increase,
        "threshold": analysis.max_error_rate_increase,
    }
    if increase > analysis.max_error_rate_increase:
        failed = True
        reasons.append(
            f"error rate {canary.error_rate:.2%} vs {stable.error_rate:.2%} on stable: "
            f"+{increase:.2%} is over the allowed +{analysis.max_error_rate_increase:.2%}"
        )
    measure, stable_ms, canary_ms = _timings(stable, canary)
    timed = min(len(canary_ms), len(stable_ms))
    if timed < MIN_LATENCIES:
        if failed:
            return Verdict(FAIL, reasons, evidence)
        return Verdict(
            INCONCLUSIVE,
            [f"{timed} successful requests timed on one side: latency needs {MIN_LATENCIES}"],
            evidence,
        )
    _, p_value = mann_whitney_greater(canary_ms, stable_ms)
    stable_median = float(np.median(stable_ms))
    canary_median = float(np.median(canary_ms))
    ratio = canary_median / stable_median if stable_median > 0 else math.inf
    evidence["latency"] = {
        "measure": measure,
        "stable_median_ms": stable_median,
        "canary_median_ms": canary_median,
        "ratio": ratio,
        "p_value": p_value,
        "alpha": analysis.alpha,
        "tolerance": analysis.latency_tolerance,
        "samples": {"stable": len(stable_ms), "canary": len(canary_ms)},
    }
    if measure == SERVICE and stable.latencies_ms and canary.latencies_ms:
        # Not judged, shown: how much of the end-to-end difference is the replicas' queues.
        evidence["latency"]["end_to_end"] = {
            "stable_median_ms": float(np.median(stable.latencies_ms)),
            "canary_median_ms": float(np.median(canary.latencies_ms)),
        }
    if p_value < analysis.alpha and ratio > 1 + analysis.latency_tolerance:
        failed = True
        what = "service time" if measure == SERVICE else "end-to-end time"
        reasons.append(
            f"latency: canary median {what} {canary_median:.1f} ms vs {stable_median:.1f} ms "
            f"({ratio:.2f}x, allowed {1 + analysis.latency_tolerance:.2f}x), "
            f"Mann-Whitney p={p_value:.2g} < {analysis.alpha}"
        )
    if failed:
        return Verdict(FAIL, reasons, evidence)
    return Verdict(
        PASS,
        [
            f"error rate +{increase:.2%} (allowed +{analysis.max_error_rate_increase:.2%}), "
            f"latency {ratio:.2f}x (p={p_value:.2g}, {measure.replace('_', '-')} time)"
        ],
        evidence,
    )


def _timings(stable: Sample, canary: Sample) -> tuple[str, list[float], list[float]]:
    """What latency compares: service times when both sides reported enough of them (a sample
    of the requests that reported is still a fair sample of the version), else end-to-end."""
    if min(len(stable.service_ms), len(canary.service_ms)) >= MIN_LATENCIES:
        return SERVICE, stable.service_ms, canary.service_ms
    return END_TO_END, stable.latencies_ms, canary.latencies_ms
