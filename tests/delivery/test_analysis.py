"""The canary judge on known samples; its Mann-Whitney test against scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from modelyard.delivery.analysis import (
    END_TO_END,
    FAIL,
    INCONCLUSIVE,
    MIN_LATENCIES,
    PASS,
    SERVICE,
    judge,
    mann_whitney_greater,
)
from modelyard.serving.records import Analysis
from modelyard.telemetry.records import Sample


def latencies(rng: np.random.Generator, n: int, median_ms: float) -> list[float]:
    # Log-normal: skewed with a long tail, like real request latencies; rounded to 0.1 ms so
    # that ties occur as they do in measurements.
    return list(np.round(rng.lognormal(np.log(median_ms), 0.4, n), 1))


@pytest.mark.parametrize("shift", [1.0, 1.05, 1.5])
def test_mann_whitney_matches_scipy_with_ties(shift: float) -> None:
    rng = np.random.default_rng(7)
    x, y = latencies(rng, 180, 10 * shift), latencies(rng, 900, 10)
    u, p = mann_whitney_greater(x, y)
    expected = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    assert u == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_all_equal_values_are_no_evidence() -> None:
    assert mann_whitney_greater([5.0] * 10, [5.0] * 20)[1] == 1.0


def test_same_behaviour_passes() -> None:
    rng = np.random.default_rng(1)
    stable = Sample(1000, 2, latencies(rng, 1000, 12))
    canary = Sample(200, 0, latencies(rng, 200, 12))
    verdict = judge(stable, canary, Analysis())
    assert verdict.result == PASS, verdict.reasons
    assert verdict.evidence["latency"]["p_value"] > 0.01


def test_five_percent_errors_fail() -> None:
    rng = np.random.default_rng(2)
    stable = Sample(1000, 0, latencies(rng, 1000, 12))
    canary = Sample(200, 10, latencies(rng, 200, 12))
    verdict = judge(stable, canary, Analysis())
    assert verdict.result == FAIL
    assert "error rate 5.00%" in verdict.reasons[0]
    assert verdict.evidence["error_rate"]["increase"] == pytest.approx(0.05)


def test_three_times_slower_fails_on_latency() -> None:
    rng = np.random.default_rng(3)
    stable = Sample(1000, 0, latencies(rng, 1000, 10))
    canary = Sample(150, 0, latencies(rng, 150, 30))
    verdict = judge(stable, canary, Analysis())
    assert verdict.result == FAIL
    assert verdict.reasons[0].startswith("latency")
    assert verdict.evidence["latency"]["ratio"] == pytest.approx(3, rel=0.2)


def test_small_significant_slowdown_within_tolerance_passes() -> None:
    # 5% slower on many requests is significant, but within the 20% the analysis allows.
    rng = np.random.default_rng(4)
    stable = Sample(20000, 0, latencies(rng, 20000, 10))
    canary = Sample(20000, 0, latencies(rng, 20000, 10.5))
    verdict = judge(stable, canary, Analysis())
    assert verdict.evidence["latency"]["p_value"] < 0.01
    assert verdict.result == PASS


def test_too_few_requests_is_inconclusive_never_pass() -> None:
    rng = np.random.default_rng(5)
    stable = Sample(1000, 0, latencies(rng, 1000, 10))
    canary = Sample(40, 0, latencies(rng, 40, 10))
    verdict = judge(stable, canary, Analysis(min_requests=100))
    assert verdict.result == INCONCLUSIVE
    assert verdict.reasons == ["canary served 40 of the 100 requests needed"]
    # Even a canary that failed everything is not judged on too little evidence.
    assert judge(stable, Sample(40, 40, [1.0] * 40), Analysis()).result == INCONCLUSIVE


def test_a_canary_failing_everything_fails_without_latencies() -> None:
    rng = np.random.default_rng(6)
    stable = Sample(1000, 0, latencies(rng, 1000, 10))
    verdict = judge(stable, Sample(200, 200, []), Analysis())
    assert verdict.result == FAIL
    assert "error rate 100.00%" in verdict.reasons[0]


def queued_and_served(
    rng: np.random.Generator, n: int, service_ms: float, queued_ms: float
) -> Sample:
    """What a revision served: its replicas' service times, and end-to-end times at the gateway
    that also hold ``queued_ms`` of queue in front of a replica."""
    service = latencies(rng, n, service_ms)
    return Sample(n, 0, [round(s + queued_ms, 1) for s in service], service)


def test_a_3x_slower_canary_fails_on_service_time_though_stable_queues_more() -> None:
    # The stable replica takes 90% of the traffic and queues (33 ms end to end for 4 ms of
    # work); the canary takes 10%, does not queue, and looks faster end to end (13 ms).
    rng = np.random.default_rng(8)
    stable = queued_and_served(rng, 900, 4, 29)
    canary = queued_and_served(rng, 100, 12, 1)
    assert np.median(canary.latencies_ms) < np.median(stable.latencies_ms)
    verdict = judge(stable, canary, Analysis())
    assert verdict.result == FAIL, verdict.reasons
    assert verdict.reasons[0].startswith("latency: canary median service time")
    latency = verdict.evidence["latency"]
    assert latency["measure"] == SERVICE
    assert latency["ratio"] == pytest.approx(3, rel=0.2)
    assert latency["end_to_end"]["canary_median_ms"] < latency["end_to_end"]["stable_median_ms"]


def test_a_faster_canary_passes_though_it_queues_more() -> None:
    # Half the latency; at 50% of the traffic its one replica queues more than stable's two.
    rng = np.random.default_rng(9)
    stable = queued_and_served(rng, 500, 4, 2)
    canary = queued_and_served(rng, 500, 2, 20)
    assert np.median(canary.latencies_ms) > 2 * np.median(stable.latencies_ms)
    verdict = judge(stable, canary, Analysis())
    assert verdict.result == PASS, verdict.reasons
    assert verdict.evidence["latency"]["measure"] == SERVICE
    assert verdict.evidence["latency"]["ratio"] == pytest.approx(0.5, rel=0.2)


def test_without_service_times_on_one_side_both_are_judged_end_to_end() -> None:
    # A canary whose replicas report nothing (a runtime's own route): end to end on both sides.
    rng = np.random.default_rng(10)
    stable = queued_and_served(rng, 1000, 10, 0)
    canary = Sample(200, 0, latencies(rng, 200, 30))
    verdict = judge(stable, canary, Analysis())
    assert verdict.result == FAIL
    assert verdict.evidence["latency"]["measure"] == END_TO_END
    assert "end_to_end" not in verdict.evidence["latency"]
    assert verdict.reasons[0].startswith("latency: canary median end-to-end time")
    # A few reports are not enough to judge on: end to end again.
    canary.service_ms = latencies(rng, MIN_LATENCIES - 1, 10)
    assert judge(stable, canary, Analysis()).evidence["latency"]["measure"] == END_TO_END
