"""How many replicas a revision wants: Knative's Pod Autoscaler (KPA) decision, as pure logic.

The gateway feeds :meth:`Kpa.record` one sample a second (the average number of in-flight requests
it saw for the revision, and how many arrived); the control plane calls :meth:`Kpa.decide` with the
number of ready replicas and applies the answer. Nothing here sleeps, starts threads or reads the
wall clock: time comes from the injected ``clock``, so a test drives it by hand.

The rules are Knative Serving's (``pkg/autoscaler/scaling/autoscaler.go`` for the decision,
``pkg/reconciler/autoscaling/kpa/scaler.go`` for bounds and scale to zero):

- Two windows over the samples: the stable window (60 s) and the panic window (10% of it, 6 s).
  Each gives a desired count ``ceil(average concurrency / target)``. An average is the plain mean
  of the samples whose time lies in ``(now - window, now]``: per sample, not time-weighted, which
  equals Knative's per-second buckets because the gateway reports once a second. An empty window
  averages 0.
- ``ready`` counts as at least 1 in every ratio, as in Knative, so a revision at zero can still
  panic and scale up at the full rate.
- Both desired counts are limited to ``[floor(ready / max_scale_down_rate),
  ceil(ready * max_scale_up_rate)]``.
- Panic starts when the panic-window count reaches ``panic_threshold_pct`` of ready; every decision
  still over the threshold extends it, and it ends once a whole stable window passed without the
  condition. While panicking the answer never goes down: it is the largest count wanted since the
  panic began.
- Outside panic the stable count is the answer. Then the answer is clamped to ``[min_replicas,
  max_replicas]``, with at least 1 replica: only the scale-to-zero rule below gives 0.
- Scale to zero (only with ``scale_to_zero``) once the revision had no traffic (every sample 0, no
  request counted, no :meth:`Kpa.demand`) for ``max(scale_to_zero_grace_s, stable_window_s)``;
  then it stays at zero until traffic or a demand comes. It ignores ``min_replicas`` and the
  scale-down rate: idle replicas have nothing to drain.
- :meth:`Kpa.demand` (a request held by the gateway while nothing is ready, Knative's activator
  poke) makes the next decisions at least 1 until a replica is ready.
- Before the first sample the answer is ``initial_replicas`` (clamped to the bounds; 0 only with
  ``scale_to_zero``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelyard.errors import InvalidInput

Clock = Callable[[], float]
"""Seconds on a monotonic scale; only differences matter."""

_CEIL_DIGITS = 9
"""Rounding before ``ceil``, so that 1.1 / 0.1 (= 11.000000000000002) asks for 11 replicas."""


class Autoscaling(BaseModel):
    """The ``autoscaling`` block of a deployment spec."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=0, description="floor while the revision has traffic")
    max_replicas: int = Field(default=4, ge=1)
    target_concurrency: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="in-flight requests per replica the autoscaler aims for",
    )
    scale_to_zero: bool = Field(
        default=False,
        description="go to 0 replicas after scale_to_zero_grace_s without traffic, "
        "whatever min_replicas says",
    )
    stable_window_s: float = Field(default=60.0, ge=1.0, le=3600.0, allow_inf_nan=False)
    panic_window_pct: float = Field(
        default=10.0, gt=0, le=100.0, description="panic window, in % of the stable window"
    )
    panic_threshold_pct: float = Field(
        default=200.0,
        gt=100.0,
        allow_inf_nan=False,
        description="panic when the panic window wants this % of the ready replicas",
    )
    max_scale_down_rate: float = Field(
        default=2.0, gt=1.0, allow_inf_nan=False, description="at most ready/rate removed at once"
    )
    max_scale_up_rate: float = Field(
        default=1000.0, gt=1.0, allow_inf_nan=False, description="at most ready*rate at once"
    )
    scale_to_zero_grace_s: float = Field(default=30.0, ge=0.0, allow_inf_nan=False)
    initial_replicas: int = Field(
        default=1, ge=0, description="replicas a new revision starts with"
    )

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas}):"
                " raise max_replicas or lower min_replicas"
            )
        if self.initial_replicas > self.max_replicas:
            raise ValueError(
                f"initial_replicas ({self.initial_replicas}) is above max_replicas"
                f" ({self.max_replicas}): lower initial_replicas or raise max_replicas"
            )
        return self

    @property
    def panic_window_s(self) -> float:
        return self.stable_window_s * self.panic_window_pct / 100.0

    @property
    def idle_before_zero_s(self) -> float:
        """How long a revision must be without traffic before it may go to zero."""
        return max(self.scale_to_zero_grace_s, self.stable_window_s)


@dataclass(frozen=True)
class Decision:
    """One answer of :meth:`Kpa.decide`."""

    desired: int
    panicking: bool
    stable_concurrency: float
    """Average concurrency over the stable window."""
    panic_concurrency: float
    """Average concurrency over the panic window."""
    reason: str
    """A short sentence for events and the dashboard."""


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    concurrency: float
    requests: int


class Kpa:
    """The autoscaler of one revision; keeps its samples and panic state between decisions.

    Safe to call from several threads: the gateway records while the control plane decides.
    """

    def __init__(self, spec: Autoscaling, clock: Clock = time.monotonic) -> None:
        self._spec = spec
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: deque[_Sample] = deque()
        self._has_samples = False
        # The idle timer starts at creation, so a revision that never gets traffic can go to zero.
        self._last_traffic_at = clock()
        self._demand_pending = False
        # Knative's panicTime: the last decision over the panic threshold, None outside panic.
        self._panic_at: float | None = None
        self._max_panic_pods = 0
        # Once at zero, zero samples keep it there; only traffic or demand() brings it back.
        self._at_zero = False

    @property
    def spec(self) -> Autoscaling:
        return self._spec

    def record(self, concurrency: float, requests: int = 0) -> None:
        """One sample: average in-flight requests over the last ~1 s, and how many arrived."""
        if not math.isfinite(concurrency) or concurrency < 0:
            raise InvalidInput(f"concurrency must be a finite number >= 0, got {concurrency!r}")
        if requests < 0:
            raise InvalidInput(f"requests must be >= 0, got {requests!r}")
        now = self._clock()
        with self._lock:
            self._samples.append(_Sample(now, concurrency, requests))
            self._has_samples = True
            if concurrency > 0 or requests > 0:
                self._traffic(now)
            self._forget_before(now - self._spec.stable_window_s)

    def demand(self) -> None:
        """A request is held for this revision while it has no ready replica."""
        now = self._clock()
        with self._lock:
            self._demand_pending = True
            self._traffic(now)

    def update(self, spec: Autoscaling) -> None:
        """A new spec for the same revision: samples and panic state carry over."""
        with self._lock:
            self._spec = spec

    def decide(self, ready: int) -> Decision:
        """The replicas wanted now, given ``ready`` replicas ready now."""
        if ready < 0:
            raise InvalidInput(f"ready must be >= 0, got {ready}")
        now = self._clock()
        with self._lock:
            spec = self._spec
            if ready > 0:
                # The held request can go through now; the load it adds shows up in the samples.
                self._demand_pending = False
            if not spec.scale_to_zero:
                self._at_zero = False
            self._forget_before(now - spec.stable_window_s)
            stable_c = self._average(now, spec.stable_window_s)
            panic_c = self._average(now, spec.panic_window_s)

            if not self._has_samples:
                return self._initial(spec, stable_c, panic_c)

            idle_s = now - self._last_traffic_at
            if (
                spec.scale_to_zero
                and not self._demand_pending
                and (self._at_zero or idle_s >= spec.idle_before_zero_s)
            ):
                self._at_zero = True
                self._end_panic()
                return Decision(
                    0, False, stable_c, panic_c, f"scale to zero: no traffic for {_num(idle_s)} s"
                )

            desired, panicking, reason = self._scale(spec, now, ready, stable_c, panic_c)
            desired, clamped = _clamp(spec, desired)
            if clamped:
                reason = f"{reason}; {clamped}"
            if self._demand_pending and ready == 0:
                reason = f"activation: a request is waiting with 0 ready replicas; {reason}"
            return Decision(desired, panicking, stable_c, panic_c, reason)

    def _scale(
        self, spec: Autoscaling, now: float, ready: int, stable_c: float, panic_c: float
    ) -> tuple[int, bool, str]:
        """Knative's ``Scale``: the window counts, rate limits and panic mode, before bounds."""
        # At zero Knative still divides by 1, so the first burst can panic and scale at full rate.
        pods = max(1, ready)
        max_up = math.ceil(spec.max_scale_up_rate * pods)
        max_down = math.floor(pods / spec.max_scale_down_rate)
        stable_want = _ceil(stable_c / spec.target_concurrency)
        panic_want = _ceil(panic_c / spec.target_concurrency)
        stable_pods = min(max(stable_want, max_down), max_up)
        panic_pods = min(max(panic_want, max_down), max_up)

        threshold = spec.panic_threshold_pct / 100.0
        over = panic_want / pods >= threshold
        if over:
            self._panic_at = now
        elif self._panic_at is not None and now - self._panic_at > spec.stable_window_s:
            self._end_panic()

        if self._panic_at is not None:
            # The stable window can lag behind a burst or trail after it: provision for the larger.
            self._max_panic_pods = max(self._max_panic_pods, stable_pods, panic_pods)
            if over:
                reason = (
                    f"panic: {_num(spec.panic_window_s)} s concurrency {panic_c:.1f}"
                    f" needs {panic_want} >= {_num(threshold)}x {_replicas(pods)}"
                )
            else:
                reason = (
                    f"panic: holding {_replicas(self._max_panic_pods)} until"
                    f" {_num(spec.stable_window_s)} s pass without a burst"
                    f" ({_num(spec.panic_window_s)} s concurrency {panic_c:.1f})"
                )
            return self._max_panic_pods, True, reason

        reason = (
            f"stable: {_num(spec.stable_window_s)} s concurrency {stable_c:.1f}"
            f" / target {_num(spec.target_concurrency)} -> {_replicas(stable_want)}"
        )
        if stable_pods > stable_want:
            reason += f"; scale down limited to {stable_pods} by max_scale_down_rate"
        elif stable_pods < stable_want:
            reason += f"; scale up limited to {stable_pods} by max_scale_up_rate"
        return stable_pods, False, reason

    def _initial(self, spec: Autoscaling, stable_c: float, panic_c: float) -> Decision:
        if spec.initial_replicas == 0 and spec.scale_to_zero and not self._demand_pending:
            self._at_zero = True
            return Decision(0, False, stable_c, panic_c, "initial scale: start at zero")
        desired, _ = _clamp(spec, spec.initial_replicas)
        reason = f"initial scale: no samples yet, {_replicas(desired)}"
        if self._demand_pending:
            reason = f"activation: a request is waiting with 0 ready replicas; {reason}"
        return Decision(desired, False, stable_c, panic_c, reason)

    def _traffic(self, now: float) -> None:
        self._last_traffic_at = now
        self._at_zero = False

    def _end_panic(self) -> None:
        self._panic_at = None
        self._max_panic_pods = 0

    def _forget_before(self, cutoff: float) -> None:
        while self._samples and self._samples[0].at <= cutoff:
            self._samples.popleft()

    def _average(self, now: float, window_s: float) -> float:
        cutoff = now - window_s
        values = [s.concurrency for s in self._samples if cutoff < s.at <= now]
        return sum(values) / len(values) if values else 0.0


def _clamp(spec: Autoscaling, desired: int) -> tuple[int, str]:
    """Bounds for a revision with traffic, and what they changed (empty when nothing)."""
    if desired > spec.max_replicas:
        return spec.max_replicas, f"clamped to max_replicas {spec.max_replicas}"
    if desired < spec.min_replicas:
        return spec.min_replicas, f"raised to min_replicas {spec.min_replicas}"
    if desired < 1:
        # Zero belongs to the scale-to-zero rule alone, which looks at traffic, not at averages.
        if spec.scale_to_zero:
            return 1, f"kept at 1 replica until idle for {_num(spec.idle_before_zero_s)} s"
        return 1, "kept at 1 replica: scale_to_zero is off"
    return desired, ""


def _ceil(ratio: float) -> int:
    return math.ceil(round(ratio, _CEIL_DIGITS))


def _num(value: float) -> str:
    return f"{round(value, 1):g}"


def _replicas(count: int) -> str:
    return f"{count} replica" if count == 1 else f"{count} replicas"
