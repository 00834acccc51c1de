"""The KPA decision, driven by a hand-moved clock: one test per behaviour."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from modelyard.errors import InvalidInput
from modelyard.serving.autoscaler import Autoscaling, Decision, Kpa


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec(**fields: Any) -> Autoscaling:
    return Autoscaling(**fields)


def feed(kpa: Kpa, clock: FakeClock, concurrency: float, seconds: int, requests: int = 0) -> None:
    """One sample a second, as the gateway reports."""
    for _ in range(seconds):
        clock.advance(1.0)
        kpa.record(concurrency, requests)


def decide_each_second(
    kpa: Kpa, clock: FakeClock, concurrency: float, seconds: int, ready: int
) -> list[Decision]:
    decisions = []
    for _ in range(seconds):
        feed(kpa, clock, concurrency, 1)
        decisions.append(kpa.decide(ready))
    return decisions


def burst_into_panic(kpa: Kpa, clock: FakeClock) -> Decision:
    """5 in flight for a minute on 1 replica, then 200 for 2 s: 6 s average 70 -> 7 replicas."""
    feed(kpa, clock, 5.0, 60)
    assert kpa.decide(1).panicking is False
    feed(kpa, clock, 200.0, 2)
    return kpa.decide(1)


def test_initial_replicas_before_any_sample() -> None:
    clock = FakeClock()
    assert Kpa(spec(initial_replicas=2), clock).decide(0).desired == 2
    decision = Kpa(spec(initial_replicas=1, min_replicas=3), clock).decide(0)
    assert decision.desired == 3
    assert decision.reason.startswith("initial scale")


def test_steady_load_wants_ceil_of_concurrency_over_target() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(target_concurrency=10.0), clock)
    feed(kpa, clock, 25.0, 60, requests=100)

    decision = kpa.decide(3)

    assert decision.desired == 3
    assert decision.stable_concurrency == 25.0
    assert decision.panic_concurrency == 25.0
    assert decision.panicking is False
    assert decision.reason.startswith("stable: 60 s concurrency 25.0")


def test_samples_older_than_the_stable_window_drop_out() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(stable_window_s=10.0), clock)
    feed(kpa, clock, 50.0, 10)
    feed(kpa, clock, 0.0, 10)

    decision = kpa.decide(1)

    assert decision.stable_concurrency == 0.0
    assert decision.desired == 1


def test_a_burst_panics_within_the_panic_window_and_scales_up() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(target_concurrency=10.0, max_replicas=10), clock)

    decision = burst_into_panic(kpa, clock)

    assert decision.panicking is True
    assert decision.panic_concurrency == pytest.approx(70.0)
    assert decision.desired == 7
    # The stable window alone would have waited: 60 s average (58*5 + 2*200) / 60 = 11.5 -> 2.
    assert math.ceil(decision.stable_concurrency / 10.0) == 2
    assert decision.reason == "panic: 6 s concurrency 70.0 needs 7 >= 2x 1 replica"


def test_no_scale_down_while_panicking() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(target_concurrency=10.0, max_replicas=10), clock)
    assert burst_into_panic(kpa, clock).desired == 7

    # Load drops to nothing; for the next stable window the answer stays at the panic peak.
    decisions = decide_each_second(kpa, clock, 0.0, 60, ready=7)

    assert {d.desired for d in decisions} == {7}
    assert all(d.panicking for d in decisions)
    assert decisions[-1].reason.startswith("panic: holding 7 replicas")


def test_panic_ends_after_a_calm_stable_window_then_scale_down_is_rate_limited() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(target_concurrency=10.0, max_scale_down_rate=2.0, max_replicas=10), clock)
    assert burst_into_panic(kpa, clock).panicking is True

    calm = decide_each_second(kpa, clock, 5.0, 60, ready=7)
    assert all(d.panicking for d in calm)  # exactly 60 s since the last burst: not yet past it

    after = decide_each_second(kpa, clock, 5.0, 1, ready=7)[0]
    assert after.panicking is False
    assert after.stable_concurrency == 5.0  # one replica would do,
    assert after.desired == 3  # but 7 may only lose floor(7 / 2) at once
    assert "max_scale_down_rate" in after.reason

    assert decide_each_second(kpa, clock, 5.0, 1, ready=3)[0].desired == 1


def test_scale_up_is_limited_by_max_scale_up_rate() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(target_concurrency=10.0, max_scale_up_rate=2.0, max_replicas=50), clock)
    feed(kpa, clock, 100.0, 60)

    assert kpa.decide(2).desired == 4


def test_min_and_max_replicas_clamp_the_answer() -> None:
    clock = FakeClock()
    quiet = Kpa(spec(min_replicas=2, max_replicas=4), clock)
    busy = Kpa(spec(min_replicas=2, max_replicas=4), clock)
    for _ in range(60):
        clock.advance(1.0)
        quiet.record(0.5)
        busy.record(1000.0)

    low, high = quiet.decide(2), busy.decide(4)

    assert low.desired == 2
    assert "min_replicas 2" in low.reason
    assert high.desired == 4
    assert "max_replicas 4" in high.reason


def test_scale_to_zero_after_the_grace_period_without_traffic() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(scale_to_zero=True, stable_window_s=10.0, scale_to_zero_grace_s=20.0), clock)
    feed(kpa, clock, 5.0, 10, requests=20)
    assert kpa.decide(1).desired == 1

    idle = decide_each_second(kpa, clock, 0.0, 20, ready=1)

    assert [d.desired for d in idle[:-1]] == [1] * 19
    assert idle[-1].desired == 0
    assert idle[-1].reason == "scale to zero: no traffic for 20 s"
    # Once at zero, more idle samples keep it there.
    assert decide_each_second(kpa, clock, 0.0, 5, ready=0)[-1].desired == 0


def test_scale_to_zero_ignores_min_replicas() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(scale_to_zero=True, min_replicas=2, stable_window_s=6.0), clock)
    feed(kpa, clock, 3.0, 6)
    assert kpa.decide(2).desired == 2

    feed(kpa, clock, 0.0, 30)

    assert kpa.decide(2).desired == 0


def test_never_scale_to_zero_without_the_flag() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(min_replicas=0, stable_window_s=10.0, scale_to_zero_grace_s=1.0), clock)
    feed(kpa, clock, 0.0, 600)

    decision = kpa.decide(1)

    assert decision.desired == 1
    assert "scale_to_zero is off" in decision.reason


def test_demand_at_zero_gives_one_replica_at_once() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(scale_to_zero=True, min_replicas=0, stable_window_s=6.0), clock)
    feed(kpa, clock, 0.0, 30)
    assert kpa.decide(0).desired == 0

    kpa.demand()  # no time passes, no sample comes
    decision = kpa.decide(0)

    assert decision.desired == 1
    assert decision.reason.startswith("activation")
    # Still nothing ready: the held request keeps it at 1 until a replica is.
    clock.advance(60.0)
    assert kpa.decide(0).desired == 1


def test_demand_honours_min_replicas() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(scale_to_zero=True, min_replicas=3, stable_window_s=6.0), clock)
    feed(kpa, clock, 0.0, 30)
    assert kpa.decide(0).desired == 0

    kpa.demand()

    assert kpa.decide(0).desired == 3


def test_update_keeps_the_history() -> None:
    clock = FakeClock()
    kpa = Kpa(spec(target_concurrency=10.0, max_replicas=10), clock)
    feed(kpa, clock, 25.0, 60)
    assert kpa.decide(3).desired == 3

    kpa.update(spec(target_concurrency=5.0, max_replicas=10))
    decision = kpa.decide(3)

    assert decision.stable_concurrency == 25.0
    assert decision.desired == 5
    assert kpa.spec.target_concurrency == 5.0


def test_record_rejects_impossible_samples() -> None:
    kpa = Kpa(spec(), FakeClock())
    with pytest.raises(InvalidInput, match="concurrency"):
        kpa.record(-1.0)
    with pytest.raises(InvalidInput, match="requests"):
        kpa.record(1.0, requests=-3)
    with pytest.raises(InvalidInput, match="ready"):
        kpa.decide(-1)


def test_autoscaling_rejects_min_above_max() -> None:
    with pytest.raises(ValidationError, match=r"max_replicas \(2\) is below min_replicas \(3\)"):
        Autoscaling(min_replicas=3, max_replicas=2)


@pytest.mark.parametrize("target", [0.0, -1.0])
def test_autoscaling_rejects_a_target_that_is_not_positive(target: float) -> None:
    with pytest.raises(ValidationError, match="target_concurrency"):
        Autoscaling(target_concurrency=target)


def test_autoscaling_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="min_scale"):
        Autoscaling.model_validate({"min_scale": 1})


def test_panic_window_is_a_share_of_the_stable_window() -> None:
    assert Autoscaling().panic_window_s == pytest.approx(6.0)
    assert Autoscaling(stable_window_s=20.0, panic_window_pct=50.0).panic_window_s == 10.0
