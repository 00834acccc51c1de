"""One loop base for every controller thread: interval, deadline and woken loops, with health.

A :class:`Loop` runs ``tick`` in a daemon thread, again and again until :meth:`Loop.stop`:

- an *interval* loop waits ``interval`` seconds between rounds;
- a *deadline* loop's ``tick`` returns how long to wait until its next due time (``FOREVER``
  for "until woken"), which overrides the interval for that one wait;
- any loop is *woken* by :meth:`Loop.wake`: the next wait is skipped (a wake that comes while
  ``tick`` runs is not lost, the next round starts at once).

A ``tick`` that raises is logged and the loop goes on, after ``error_wait`` seconds when given
(else its usual wait). :meth:`Loop.health` tells the API what each loop last did, so a controller
that keeps failing shows on ``/api/v1/health`` instead of only in a log.

Owners hold their loops (``self._loop = Loop("serving", self.reconcile, interval=1.0)``) or
subclass it and override :meth:`Loop.tick`; :meth:`Loop.ready` (checked under the condition
before each wait) lets a loop with a condition of its own skip the wait when work is pending.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

FOREVER = math.inf
"""What a deadline loop's ``tick`` returns when nothing is due: sleep until woken or stopped."""
ERROR_CHARS = 500
"""How much of an error's message health keeps (a traceback is in the log)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class LoopHealth:
    name: str
    alive: bool
    """The thread runs (started, and not stopped or dead)."""
    last_tick: dt.datetime | None
    """When the last round ended, failed or not."""
    last_error: str | None
    last_error_at: dt.datetime | None
    errors: int
    """Rounds that raised since the loop was made."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alive": self.alive,
            "last_tick": self.last_tick.isoformat() if self.last_tick else None,
            # Only the exception's type: this answer needs no key, and a message can carry a
            # database address or a user's input; the whole error is in the log.
            "last_error": self.last_error.split(":", 1)[0] if self.last_error else None,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "errors": self.errors,
        }


class Loop:
    """A controller thread: ``tick`` in rounds until stopped; see the module docstring."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], float | None] | None = None,
        *,
        interval: float | None = None,
        wait_first: bool = False,
        error_wait: float | None = None,
        condition: threading.Condition | None = None,
        ready: Callable[[], bool] | None = None,
        started: Callable[[], None] | None = None,
        finished: Callable[[], None] | None = None,
        join_timeout: float = 10.0,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        """``interval``: seconds between rounds (None: until woken); ``wait_first``: wait once
        before the first round; ``condition``: share the owner's condition, so that any
        ``notify_all`` on it ends a wait (as :meth:`wake` does); ``ready``, ``started``,
        ``finished``: what the methods of those names do, for an owner that does not subclass;
        ``join_timeout``: how long :meth:`stop` waits for the thread."""
        self.name = name
        self._tick = tick
        self._on_ready = ready
        self._on_started = started
        self._on_finished = finished
        self.interval = interval
        self.wait_first = wait_first
        self.error_wait = error_wait
        self.join_timeout = join_timeout
        self.clock = clock
        self._cond = condition if condition is not None else threading.Condition()
        self._stopping = False
        self._woken = False
        self._thread: threading.Thread | None = None
        self._last_tick: dt.datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: dt.datetime | None = None
        self._errors = 0

    # what owners and subclasses give -----------------------------------------------------------
    def tick(self) -> float | None:
        """One round. Returns seconds until the next one is due (``FOREVER``: until woken), or
        None for the loop's ``interval``."""
        if self._tick is None:
            raise NotImplementedError(f"loop {self.name} has no tick")
        return self._tick()

    def ready(self) -> bool:
        """Work is pending: skip the next wait. Called with the condition held."""
        return self._on_ready() if self._on_ready is not None else False

    def started(self) -> None:
        """Runs in the thread before the first round (a failure is logged, the loop goes on)."""
        if self._on_started is not None:
            self._on_started()

    def finished(self) -> None:
        """Runs in the thread after the last round."""
        if self._on_finished is not None:
            self._on_finished()

    # control from other threads ----------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        """Stop was asked: a long round checks it to return early."""
        return self._stopping

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._cond:
            self._stopping = False
        if self.alive:
            return  # a loop that was asked to stop and has not yet ended just goes on
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next round now (or right after the current one)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def request_stop(self) -> None:
        """Ask the thread to end after its current round, without waiting for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` (default ``join_timeout``) seconds; True when it ended."""
        thread = self._thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(self.join_timeout if timeout is None else timeout)
        return not thread.is_alive()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop and wait for the thread with a deadline; True when it ended in time."""
        self.request_stop()
        ended = self.join(timeout)
        if not ended:
            log.warning("loop %s did not end within its deadline; it is left to finish", self.name)
        return ended

    def health(self) -> LoopHealth:
        with self._cond:
            return LoopHealth(
                name=self.name,
                alive=self.alive and not self._stopping,
                last_tick=self._last_tick,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                errors=self._errors,
            )

    # the thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.started()
        except Exception as exc:
            self._failed(exc, "starting")
        if self.wait_first:
            self._wait(self.interval)
        while not self._stopping:
            wait: float | None
            try:
                wait = self.tick()
            except Exception as exc:
                self._failed(exc, "a round")
                wait = self.error_wait
            with self._cond:
                self._last_tick = self.clock()
            if self._stopping:
                break
            self._wait(self.interval if wait is None else wait)
        try:
            self.finished()
        except Exception as exc:
            self._failed(exc, "finishing")

    def _wait(self, seconds: float | None) -> None:
        timeout = None if seconds is None or seconds == FOREVER else max(0.0, seconds)
        with self._cond:
            if not self._stopping and not self._woken and not self.ready():
                self._cond.wait(timeout)
            self._woken = False

    def _failed(self, exc: Exception, what: str) -> None:
        with self._cond:
            self._last_error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
            self._last_error_at = self.clock()
            self._errors += 1
        if self._stopping:
            # Ending a round by force (closing its connection) often makes it raise.
            log.debug("loop %s: %s failed while stopping", self.name, what, exc_info=exc)
        else:
            log.exception("loop %s: %s failed; it goes on", self.name, what)
