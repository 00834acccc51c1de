"""A realtime worker: routes a stream's events to triggers and turns triggers into predictions.

One process per realtime deployment (``python -m modelyard.realtime.worker``, started by the
control plane's `modelyard.realtime.supervisor`), with two kinds of threads:

- the router reads the stream's log after its cursor, applies the trigger rule and queues the
  triggers, moving the cursor with them (the queue makes that one step, or deduplicates a repeat);
- ``concurrency`` executors claim triggers (one entity's one at a time, in log order; different
  entities in parallel), read the entity's history up to the trigger event, call the inference
  function with the model pinned for this prediction, store the prediction, then acknowledge.

Guarantees: at-least-once processing (a kill -9 anywhere leaves the trigger queued: it runs again)
with exactly-once effects in the prediction store (one prediction per deployment, trigger event
and model version). A function that raises, or returns later than ``timeout_s``, fails the
attempt; after ``max_attempts`` the trigger is a dead letter with its traceback, out of its
entity's way, and can be retried. Other entities go on meanwhile. A function that never returns
holds one executor thread.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from modelyard.errors import ServerUnreachable
from modelyard.realtime.durations import seconds
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.history import History
from modelyard.realtime.models import Model, ModelSource
from modelyard.realtime.predictions import Prediction, PredictionStore
from modelyard.realtime.queue import Trigger, TriggerQueue
from modelyard.realtime.records import RealtimeSpec
from modelyard.realtime.rules import Matcher, load_callable
from modelyard.realtime.streams import RawEvent

log = logging.getLogger(__name__)
ROUTE_BATCH = 1000
LEASE_S = 60.0
IDLE_S = (0.002, 0.05)
"""Poll interval when idle: from the first value, doubling up to the second."""
Function = Callable[[History, Model | None], Any]


def infer(
    function: Function,
    events: EventStore,
    stream: str,
    entity: str,
    seq: int,
    history_limit: int,
    model: Model | None,
) -> Any:
    """The function's answer for the trigger at ``seq``: what serving and replay both run."""
    found = events.history(stream, entity, seq, history_limit)
    if not found or found[-1].seq != seq:
        raise LookupError(f"the trigger event (seq {seq}) is not in the log any more")
    return function(History(found), model)


class Worker:
    def __init__(
        self,
        deployment: str,
        spec: RealtimeSpec,
        events: EventStore,
        queue: TriggerQueue,
        predictions: PredictionStore,
        models: ModelSource | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.deployment = deployment
        self.spec = spec
        self.stream = f"{deployment.partition('/')[0]}/{spec.stream}"
        self.events = events
        self.queue = queue
        self.predictions = predictions
        self.models = models
        self.clock = clock
        self.function: Function = load_callable(spec.function, "function")
        self.matcher = Matcher(spec.rule)
        self.ttl_s = seconds(spec.ttl, "ttl")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # routing ------------------------------------------------------------------------------------
    def route_once(self) -> int:
        """Queue the triggers among the next events of the log; returns how many events."""
        cursor = self.queue.cursor(self.deployment)
        batch = self.events.read(self.stream, cursor, ROUTE_BATCH)
        if not batch:
            return 0
        now = self.clock()
        triggers = [self._trigger(event, now) for event in self.matcher.triggers(batch)]
        self.queue.enqueue(self.deployment, triggers, batch[-1].seq)
        return len(batch)

    def _trigger(self, event: RawEvent, now: float) -> Trigger:
        return Trigger(self.deployment, event.entity, event.seq, event.event_id, event.time, now)

    # executing ----------------------------------------------------------------------------------
    def work_once(self, limit: int = 8) -> int:
        """Claim up to ``limit`` triggers (of distinct entities) and process them."""
        claimed = self.queue.claim(self.deployment, limit, LEASE_S, self.clock())
        for trigger in claimed:
            self.process(trigger)
        return len(claimed)

    def process(self, trigger: Trigger) -> None:
        started = time.monotonic()
        try:
            model = self.models.current() if self.models is not None else None
            value = infer(
                self.function,
                self.events,
                self.stream,
                trigger.entity,
                trigger.seq,
                self.spec.history_limit,
                model,
            )
            took = time.monotonic() - started
            if took > self.spec.timeout_s:
                raise TimeoutError(
                    f"took {took:.2f} s, over the timeout_s of {self.spec.timeout_s}"
                )
            now = self.clock()
            self.predictions.put(
                Prediction(
                    deployment=self.deployment,
                    entity=trigger.entity,
                    value=value,
                    model=model.label if model is not None else None,
                    event_id=trigger.event_id,
                    seq=trigger.seq,
                    event_time=trigger.event_time,
                    written_at=now,
                    expires_at=now + self.ttl_s,
                )
            )
        except Exception:
            error = traceback.format_exc()
            dead = self.queue.fail(trigger, error, self.spec.max_attempts, self.clock())
            if dead:
                log.warning(
                    "trigger %s of %s is a dead letter after %d attempts:\n%s",
                    trigger.event_id,
                    trigger.entity,
                    self.spec.max_attempts,
                    error,
                )
            return
        self.queue.ack(trigger)

    # the process --------------------------------------------------------------------------------
    def start(self) -> None:
        self.queue.release(self.deployment)  # this deployment's only worker holds no lease yet
        self._threads = [threading.Thread(target=self._loop, args=(self.route_once,))]
        self._threads += [
            threading.Thread(target=self._loop, args=(self.work_once,))
            for _ in range(self.spec.concurrency)
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self, step: Callable[[], int]) -> None:
        idle = IDLE_S[0]
        while not self._stop.is_set():
            try:
                done = step()
            except Exception:
                log.exception("%s failed; retrying", step.__name__)
                done, idle = 0, IDLE_S[1]
            if done:
                idle = IDLE_S[0]
                continue
            self._stop.wait(idle)
            idle = min(IDLE_S[1], idle * 2)


def _first_model(models: ModelSource, stopped: threading.Event) -> bool:
    """Load the model before the first trigger: a bad reference fails the start, not each
    trigger. A control plane that is down (killed, restarting) is waited for instead: no
    supervisor would restart this worker meanwhile. False when stopped while waiting."""
    wait = 0.1
    while not stopped.is_set():
        try:
            log.info("model %s", models.current().label)
            return True
        except ServerUnreachable as exc:
            log.warning("%s; trying again in %.1f s", exc, wait)
        stopped.wait(wait)
        wait = min(5.0, wait * 2)
    return False


def main(argv: list[str] | None = None) -> None:
    from modelyard.client import Client
    from modelyard.realtime.backends import (
        open_event_store,
        open_prediction_store,
        open_trigger_queue,
    )
    from modelyard.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m modelyard.realtime.worker")
    parser.add_argument("--deployment", required=True, help="namespace/name")
    parser.add_argument("--spec", required=True, help="the realtime deployment's spec, as JSON")
    parser.add_argument("--launch", help="the supervisor's id of this start (finds the process)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.path.insert(0, os.getcwd())
    settings = load_settings().settings
    spec = RealtimeSpec.model_validate_json(args.spec)
    namespace = args.deployment.partition("/")[0]
    ref = spec.model_ref(namespace)
    models = ModelSource(Client(settings=settings), ref) if ref is not None else None
    worker = Worker(
        args.deployment,
        spec,
        open_event_store(settings.realtime_events_url),
        open_trigger_queue(settings.realtime_queue_url),
        open_prediction_store(settings.realtime_predictions_url),
        models,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    if models is not None and not _first_model(models, stopped):
        return
    worker.start()
    log.info("realtime worker of %s on stream %s: ready", args.deployment, worker.stream)
    stopped.wait()
    worker.stop()


if __name__ == "__main__":
    main()
