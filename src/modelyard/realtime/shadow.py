"""A realtime deployment's shadow revision: its predictions written aside, compared with the
primary's.

Under the ``shadow`` rollout strategy (`modelyard.delivery.rollout`) a new revision's worker runs
beside the primary's and consumes the same stream with a cursor of its own, which starts at the
primary's cursor: its triggers, dead letters and predictions go under `shadow_key` (never the
served predictions; the gateway reads them with ``?revision=shadow``). It learns its role from
the control plane (`role`): promoted, it takes over the primary's key (as a replacement does) and
drops what it kept aside; rolled back or superseded, it drops it when it stops.

`Comparison` matches each shadow prediction with the primary's for the same trigger event: equal
values (numbers up to 1e-6 relative) are a ``match``, others a ``mismatch``, and a trigger the
primary has not predicted within ``wait_s`` is ``missing`` (it failed there, or lags far
behind). The worker reports the counts to the control plane, which keeps them on the rollout.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Literal

from modelyard.realtime.predictions import Prediction, PredictionStore
from modelyard.serving.records import DeploymentInfo

Role = Literal["primary", "shadow", "idle", "pending"]
RESULTS = ("match", "mismatch", "missing")
HISTORY_LOOKUP = 100
"""The primary's latest predictions of the entity searched for the trigger's."""


def shadow_key(deployment: str, revision: int) -> str:
    """Where revision ``revision`` of ``deployment`` (``namespace/name``) keeps its triggers and
    predictions while it is the shadow: a key of its own, so a later shadow starts afresh."""
    return f"{deployment}~{revision}"


def role(info: DeploymentInfo, revision: int) -> Role:
    """What revision ``revision``'s worker is now: the ``shadow`` of a rollout, the ``primary``
    (it has the deployment's share, or it replaces the last one as soon as it runs), ``idle``
    (rolled back, superseded, or retired) or ``pending`` (starting under the shadow strategy:
    which of the two it is comes when it is ready)."""
    if info.shadow is not None and info.shadow.revision == revision:
        return "shadow"
    mine = next((r for r in info.revisions if r.number == revision), None)
    if mine is not None and mine.percent > 0:
        return "primary"
    if mine is not None and mine.ready_at is None and mine.state == "deploying":
        return "pending" if info.rollout.strategy == "shadow" else "primary"
    return "idle"


def same(a: Any, b: Any) -> bool:
    """Equal values, numbers up to 1e-6 relative (another library's float rounding is no
    mismatch)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class Comparison:
    """The shadow's predictions waiting for the primary's, and the counts so far."""

    def __init__(
        self,
        primary: str,
        predictions: PredictionStore,
        clock: Callable[[], float],
        wait_s: float = 60.0,
        limit: int = 100_000,
    ) -> None:
        self.primary = primary
        self.predictions = predictions
        self.clock = clock
        self.wait_s = wait_s
        self.counts: Counter[str] = Counter()
        self._waiting: deque[tuple[float, Prediction]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, prediction: Prediction) -> None:
        with self._lock:
            self._waiting.append((self.clock(), prediction))

    def check(self) -> int:
        """Compare what waits with the primary's predictions; returns how many were decided."""
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque(maxlen=self._waiting.maxlen)
        now = self.clock()
        found: dict[str, dict[str, Prediction]] = {}
        kept: list[tuple[float, Prediction]] = []
        counts: Counter[str] = Counter()
        for since, mine in waiting:
            if mine.entity not in found:
                history = self.predictions.history(self.primary, mine.entity, HISTORY_LOOKUP, now)
                found[mine.entity] = {p.event_id: p for p in reversed(history)}
            theirs = found[mine.entity].get(mine.event_id)
            if theirs is not None:
                counts["match" if same(mine.value, theirs.value) else "mismatch"] += 1
            elif now - since >= self.wait_s:
                counts["missing"] += 1
            else:
                kept.append((since, mine))
        with self._lock:
            self._waiting.extendleft(reversed(kept))
            self.counts.update(counts)
        return len(waiting) - len(kept)

    def take(self) -> dict[str, int]:
        """The counts since the last take (what the worker reports)."""
        with self._lock:
            counts, self.counts = dict(self.counts), Counter()
        return {r: counts.get(r, 0) for r in RESULTS}
