"""A realtime worker: routes a stream's events to triggers and turns triggers into predictions.

A realtime revision's replica (``python -m modelyard.realtime.worker``, run by the orchestrator
like a model server: a process forked by the local launcher, or a Kubernetes pod), with two kinds
of threads:

- the router reads the stream's log after its cursor, applies the trigger rule and queues the
  triggers, moving the cursor with them (the queue makes that one step, or deduplicates a repeat);
- ``concurrency`` executors claim triggers (one entity's one at a time, in log order; different
  entities in parallel), read the entity's history up to the trigger event, call the inference
  function with the revision's model version, store the prediction, then acknowledge.
  An executor takes a batch of triggers (of each entity, a run of its oldest) at a time: one
  read for their histories, the function on each in turn (or once on them all when it is
  `batched`, see `modelyard.realtime.functions`), one write to store their predictions, then one
  acknowledgement; the batch is as large as about ``BATCH_S`` of the function's calls, so a slow
  function goes one trigger at a time;
- a small HTTP server answers the orchestrators' health probes (``/v2/health/live``, and
  ``/v2/health/ready`` once the model is loaded and the threads run): nothing else reaches it.

Guarantees: at-least-once processing (a kill -9 anywhere leaves the trigger queued: it runs again)
with exactly-once effects in the prediction store (one prediction per deployment, trigger event
and model version). A function that raises, or returns later than ``timeout_s``, fails the
attempt; after ``max_attempts`` the trigger is a dead letter with its traceback, out of its
entity's way, and can be retried. Other entities go on meanwhile, those of the failed one's batch
included. A function that never returns holds one executor thread, and the rest of its batch
until their lease ends and they go out again.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any

from modelyard.client import Client
from modelyard.errors import ServerUnreachable
from modelyard.realtime.durations import seconds
from modelyard.realtime.emitter import PredictionEvents
from modelyard.realtime.eventstore import EventStore
from modelyard.realtime.functions import call_many, is_batched
from modelyard.realtime.history import History
from modelyard.realtime.models import Model, ModelSource
from modelyard.realtime.predictions import Prediction, PredictionStore
from modelyard.realtime.queue import Trigger, TriggerQueue
from modelyard.realtime.records import RealtimeWorkload
from modelyard.realtime.rules import Matcher, load_callable
from modelyard.realtime.shadow import Comparison, shadow_key
from modelyard.realtime.streams import RawEvent
from modelyard.serving.logs import run_logged
from modelyard.serving.replica_headers import INTERNAL_HEADER, TOKEN_ENV, TOKEN_HEADER
from modelyard.types import ModelRef

log = logging.getLogger(__name__)
ROUTE_BATCH = 1000
BATCH = 64
"""Most triggers an executor claims and processes at once."""
BATCH_S = 0.02
"""About how long a batch's function calls should take: batches shrink for a slow function (one
trigger at a time when a call takes longer), so a batch neither holds its triggers' lease long nor
keeps a trigger waiting on others."""
LEASE_S = 60.0
IDLE_S = (0.002, 0.05)
"""Poll interval when idle: from the first value, doubling up to the second (executors: the
router wakes them when it queues triggers, so this only finds what other processes put back)."""
ROUTE_IDLE_S = (0.002, 0.01)
"""The router's: the log is polled, so its longest interval is added to a trigger's latency."""
Function = Callable[..., Any]
"""``function(history, model)``, or ``function(histories, model)`` when `batched`."""


def history_of(found: list[RawEvent], seq: int) -> History:
    """The trigger's history from what the log returned for it: its events up to ``seq``."""
    if not found or found[-1].seq != seq:
        raise LookupError(f"the trigger event (seq {seq}) is not in the log any more")
    return History(found)


def _before_failures(
    made: list[tuple[Trigger, Prediction]],
    failed: list[tuple[Trigger, str]],
    skipped: list[Trigger],
) -> list[tuple[Trigger, Prediction]]:
    """``made`` without what follows a failed trigger of the same entity (those go to
    ``skipped``): an entity's predictions are stored in log order, never past a failed one."""
    first: dict[str, int] = {}
    for trigger, _ in failed:
        first[trigger.entity] = min(trigger.seq, first.get(trigger.entity, trigger.seq))
    kept = []
    for trigger, prediction in made:
        if trigger.seq > first.get(trigger.entity, trigger.seq):
            skipped.append(trigger)
        else:
            kept.append((trigger, prediction))
    return kept


class Worker:
    def __init__(
        self,
        deployment: str,
        spec: RealtimeWorkload,
        events: EventStore,
        queue: TriggerQueue,
        predictions: PredictionStore,
        models: ModelSource | None,
        clock: Callable[[], float] = time.time,
        emitter: PredictionEvents | None = None,
    ) -> None:
        self.name = deployment
        self.deployment = deployment
        """The key its triggers and predictions go under: the deployment's, or (while it is the
        shadow) its own (`modelyard.realtime.shadow`)."""
        self.spec = spec
        self.stream = f"{deployment.partition('/')[0]}/{spec.stream}"
        self.events = events
        self.queue = queue
        self.predictions = predictions
        self.models = models
        self.clock = clock
        self.emitter = emitter
        self.comparison: Comparison | None = None
        self.function: Function = load_callable(spec.function, "function")
        self.matcher = Matcher(spec.rule)
        self.ttl_s = seconds(spec.ttl, "ttl")
        self._stop = threading.Event()
        self._wake = threading.Semaphore(0)
        """Released by the router when it queued triggers, and by an executor that claimed a
        full batch (more may wait): each release wakes one idle executor, not all of them, so
        idle executors do not all race to claim what one batch takes."""
        self._threads: list[threading.Thread] = []
        self._cursor: int | None = None
        """The router's cursor, read once: this worker is its deployment's only router."""
        self._call_s = 0.0
        """A moving average of the function's time per call: sizes the batches."""

    # routing ------------------------------------------------------------------------------------
    def route_once(self) -> int:
        """Queue the triggers among the next events of the log; returns how many events."""
        if self._cursor is None:
            self._cursor = self.queue.cursor(self.deployment)
        batch = self.events.read(self.stream, self._cursor, ROUTE_BATCH)
        if not batch:
            return 0
        now = self.clock()
        triggers = [self._trigger(event, now) for event in self.matcher.triggers(batch)]
        try:
            self.queue.enqueue(self.deployment, triggers, batch[-1].seq)
        except BaseException:
            self._cursor = None  # read it again: the enqueue may or may not have happened
            raise
        self._cursor = batch[-1].seq
        if triggers:
            self._wake.release()
        return len(batch)

    def _trigger(self, event: RawEvent, now: float) -> Trigger:
        return Trigger(self.deployment, event.entity, event.seq, event.event_id, event.time, now)

    # executing ----------------------------------------------------------------------------------
    def work_once(self, limit: int | None = None) -> int:
        """Claim up to ``limit`` triggers (of each free entity, its oldest; by default as many as
        the function's recent speed fits in ``BATCH_S``) and process them as a batch."""
        if limit is None:
            limit = max(1, min(BATCH, int(BATCH_S / self._call_s))) if self._call_s else 1
        claimed = self.queue.claim(self.deployment, limit, LEASE_S, self.clock())
        if len(claimed) == limit:
            self._wake.release()  # there may be more: another executor claims them meanwhile
        if claimed:
            self.process(claimed)
        return len(claimed)

    def process(self, batch: Sequence[Trigger]) -> None:
        """Process claimed triggers (of each entity, a run of its oldest, in log order): their
        histories in one read, the function on each (or once on all), the predictions stored in
        one write and then acknowledged in one call. A trigger whose attempt failed is put back
        or dead-lettered on its own; its entity's later triggers in the batch are put back
        unattempted (and nothing of theirs stored), so they run after it, in log order."""
        failed: list[tuple[Trigger, str]] = []
        made: list[tuple[Trigger, Prediction]] = []
        try:
            model = self.models.current() if self.models is not None else None
            histories = self.events.histories(
                self.stream, [(t.entity, t.seq) for t in batch], self.spec.history_limit
            )
        except Exception:
            error = traceback.format_exc()
            model, histories, failed = None, [], [(t, error) for t in batch]
        ready: list[tuple[Trigger, History]] = []
        for trigger, found in zip(batch, histories, strict=True):
            try:
                ready.append((trigger, history_of(found, trigger.seq)))
            except Exception:
                failed.append((trigger, traceback.format_exc()))
        if len(ready) > 1 and is_batched(self.function):
            with contextlib.suppress(Exception):  # then each alone: see `functions`
                made, ready = self._predict(ready, model), []
        for one in ready:
            try:
                made += self._predict([one], model)
            except Exception:
                failed.append((one[0], traceback.format_exc()))
        skipped: list[Trigger] = []
        stored = self._store(_before_failures(made, failed, skipped), failed, skipped)
        stored = self.stored(stored, failed)
        if stored:  # stored durably: only now may they leave the queue
            self.queue.ack_many([t for t, _, _ in stored])
        for trigger, error in failed:
            self._fail(trigger, error)
        if skipped:
            self.queue.put_back(skipped)

    def _store(
        self,
        made: list[tuple[Trigger, Prediction]],
        failed: list[tuple[Trigger, str]],
        skipped: list[Trigger],
    ) -> list[tuple[Trigger, Prediction, bool]]:
        """Store the batch's predictions in one write; when that fails, one by one, so a value
        the store cannot take fails its own trigger only (and its entity's later ones go to
        ``skipped``). Returns those stored, each with whether it is new (not stored before)."""
        if not made:
            return []
        try:
            news = self.predictions.put_many([p for _, p in made])
            return [(t, p, new) for (t, p), new in zip(made, news, strict=True)]
        except Exception:
            if len(made) == 1:
                failed.append((made[0][0], traceback.format_exc()))
                return []
        stored = []
        for trigger, prediction in made:
            if any(f.entity == trigger.entity for f, _ in failed):
                skipped.append(trigger)
                continue
            try:
                stored.append((trigger, prediction, self.predictions.put(prediction)))
            except Exception:
                failed.append((trigger, traceback.format_exc()))
        return stored

    def _predict(
        self, ready: list[tuple[Trigger, History]], model: Model | None
    ) -> list[tuple[Trigger, Prediction]]:
        """The function's predictions for ``ready`` (in one call when it is batched)."""
        started = time.monotonic()
        values = call_many(self.function, [history for _, history in ready], model)
        took = time.monotonic() - started
        per_call = took / len(ready)
        self._call_s = 0.8 * self._call_s + 0.2 * per_call if self._call_s else per_call
        if took > self.spec.timeout_s:
            raise TimeoutError(f"took {took:.2f} s, over the timeout_s of {self.spec.timeout_s}")
        now = self.clock()
        return [
            (
                trigger,
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
                ),
            )
            for (trigger, _), value in zip(ready, values, strict=True)
        ]

    def _fail(self, trigger: Trigger, error: str) -> None:
        dead = self.queue.fail(trigger, error, self.spec.max_attempts, self.clock())
        if dead:
            log.warning(
                "trigger %s of %s is a dead letter after %d attempts:\n%s",
                trigger.event_id,
                trigger.entity,
                self.spec.max_attempts,
                error,
            )

    def stored(
        self, stored: list[tuple[Trigger, Prediction, bool]], failed: list[tuple[Trigger, str]]
    ) -> list[tuple[Trigger, Prediction, bool]]:
        """What follows the predictions' ``put`` (each with whether it is new), before their
        triggers are acknowledged: a shadow's comparison, or the deployment's prediction events.
        Returns those to acknowledge; a trigger whose event was not appended goes to ``failed``
        (its attempt fails). A retried trigger emits again although its prediction is no longer
        new: the attempt that stored it may have died before its event was appended."""
        comparison = self.comparison
        if comparison is not None:  # the shadow's: compared, never emitted
            for _, prediction, new in stored:
                if new:
                    comparison.add(prediction)
            return stored
        if self.emitter is None:
            return stored
        emitted = [item for item in stored if item[2] or item[0].attempts > 0]
        errors = self.emitter.emit_many([prediction for _, prediction, _ in emitted])
        lost = {id(t): e for (t, _, _), e in zip(emitted, errors, strict=True) if e is not None}
        failed += [
            (t, f"its prediction event was not appended: {lost[id(t)]}")
            for t, _, _ in stored
            if id(t) in lost
        ]
        return [item for item in stored if id(item[0]) not in lost]

    # roles --------------------------------------------------------------------------------------
    def shadow(self, revision: int) -> None:
        """Work (once started) as the shadow: under a key of its own, from the primary's cursor
        on when it starts afresh (a restarted shadow goes on from its own cursor)."""
        key = shadow_key(self.name, revision)
        if self.queue.cursor(key) == 0:
            self.queue.enqueue(key, [], self.queue.cursor(self.name))
        self.deployment, self._cursor = key, None
        self.comparison = Comparison(self.name, self.predictions, self.clock)

    def promote(self) -> None:
        """The shadow became the primary: its threads start again under the primary's key (the
        leases of the worker it replaces end, as a replacement's do) and what it kept aside
        goes."""
        self.stop()
        self.primary()
        self.start()

    def primary(self) -> None:
        """Work (once started) as the primary, dropping what it kept aside as a shadow."""
        aside, self.deployment, self.comparison = self.deployment, self.name, None
        self._cursor = None  # the router reads the key's own
        self.drop(aside)

    def drop(self, key: str) -> None:
        """Forget a shadow's triggers, dead letters, cursor and predictions."""
        if key != self.name:
            self.queue.drop(key)
            self.predictions.drop(key)

    # the process --------------------------------------------------------------------------------
    def start(self) -> None:
        # A revision runs one worker: the leases of one killed with -9 end now, not after
        # LEASE_S. A new revision's worker also ends those of the one it replaces, which stops
        # a moment later: a trigger out then may run in both (one prediction per model version).
        self.queue.release(self.deployment)
        self._stop.clear()
        # The router polls the log; executors wait on the router's wake-up as well.
        route = (self.route_once, ROUTE_IDLE_S, self._stop.wait)
        work = (self.work_once, IDLE_S, lambda idle: self._wake.acquire(timeout=idle))
        self._threads = [threading.Thread(target=self._loop, args=route)]
        self._threads += [
            threading.Thread(target=self._loop, args=work) for _ in range(self.spec.concurrency)
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for _ in self._threads:
            self._wake.release()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(
        self, step: Callable[[], int], idle_s: tuple[float, float], wait: Callable[[float], Any]
    ) -> None:
        """``step`` until stopped; when it found nothing, ``wait`` from ``idle_s[0]`` s, doubling
        up to ``idle_s[1]``."""
        low, high = idle_s
        idle = low
        while not self._stop.is_set():
            try:
                done = step()
            except Exception:
                log.exception("%s failed; retrying", step.__name__)
                done, idle = 0, IDLE_S[1]
            if done:
                idle = low
                continue
            wait(idle)
            idle = min(high, idle * 2)


def _first_model(models: ModelSource, stopped: threading.Event) -> bool:
    """Load the model before the first trigger: a bad reference fails the start, not each
    trigger. A control plane that is down (killed, restarting) is waited for instead: nothing
    would restart this worker meanwhile. False when stopped while waiting."""
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


class _Health(BaseHTTPRequestHandler):
    """``/v2/health/live`` always, ``/v2/health/ready`` once the worker works: the paths the
    orchestrators probe every replica on (there is no inference to serve)."""

    ready = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/v2/health/live" or (
            self.path == "/v2/health/ready" and self.ready.is_set()
        ):
            code = 200
        else:
            code = 404 if not self.path.startswith("/v2/health/") else 503
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds: not worth a log line


def _health_server(args: argparse.Namespace) -> HTTPServer:
    if args.fd is None:
        return ThreadingHTTPServer((args.host, args.port), _Health)
    server = ThreadingHTTPServer((args.host, 0), _Health, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=args.fd)
    return server


def _emitter(client: Client, deployment: str, token: str) -> PredictionEvents:
    namespace, _, name = deployment.partition("/")
    path = f"/namespaces/{namespace}/realtime/{name}/prediction-events"
    headers = {TOKEN_HEADER.decode(): token}

    def send(batch: list[dict[str, Any]]) -> None:
        client.request("POST", path, json={"events": batch}, headers=headers)

    return PredictionEvents(send)


def main(argv: list[str] | None = None) -> None:
    from modelyard.realtime.backends import (
        open_event_store,
        open_prediction_store,
        open_trigger_queue,
    )
    from modelyard.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m modelyard.realtime.worker")
    parser.add_argument("--deployment", required=True, help="namespace/name")
    parser.add_argument("--model", help="namespace/name@number: the revision's pinned version")
    parser.add_argument("--revision", type=int, help="the revision's number: its role's key")
    parser.add_argument("--spec", required=True, help="the revision's realtime section, as JSON")
    parser.add_argument("--host", default="127.0.0.1", help="where the health endpoint listens")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fd", type=int, help="an inherited listening socket for it instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # No request reaches a worker: the function needs no token. The worker keeps it to prove
    # to the control plane that the prediction events it appends are its revision's.
    token = os.environ.pop(TOKEN_ENV, "")
    # A forked worker got its environment after its interpreter started: PYTHONPATH (the spec's
    # ``env``) is put on the path here, as a new interpreter would have.
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    sys.path[:0] = [p for p in dict.fromkeys([*paths, os.getcwd()]) if p and p not in sys.path]
    settings = load_settings().settings
    spec = RealtimeWorkload.model_validate_json(args.spec)
    # The revision pins one version: no reference to follow (a move makes a new revision).
    client = Client(settings=settings)
    client.http.headers[INTERNAL_HEADER] = "realtime-worker"  # its role polls: not access lines
    models = ModelSource(client, ModelRef.parse(args.model), math.inf) if args.model else None
    emitter = _emitter(client, args.deployment, token) if spec.emit_events else None
    worker = Worker(
        args.deployment,
        spec,
        open_event_store(settings.realtime_events_url),
        open_trigger_queue(settings.realtime_queue_url),
        open_prediction_store(settings.realtime_predictions_url),
        models,
        emitter=emitter,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    health = _health_server(args)
    threading.Thread(target=health.serve_forever, name="health", daemon=True).start()
    if models is not None and not _first_model(models, stopped):
        return
    if emitter is not None:
        emitter.start()
    from modelyard.realtime.roles import Roles

    roles = Roles(worker, client, args.revision, token) if args.revision else None
    if roles is None:
        worker.start()
    else:  # it works once the control plane says as what; ready to be marked ready meanwhile
        threading.Thread(target=roles.run, args=(stopped,), name="roles", daemon=True).start()
    _Health.ready.set()
    log.info("realtime worker of %s on stream %s: ready", args.deployment, worker.stream)
    stopped.wait()
    _Health.ready.clear()
    worker.stop()
    if roles is not None:
        with contextlib.suppress(Exception):
            roles.report()
        with contextlib.suppress(Exception):
            roles.close()
    if emitter is not None:
        emitter.stop()
    health.shutdown()


def run_forked(argv: list[str], env: dict[str, str], log_path: str, fd: int) -> None:
    """The body of a worker forked by the local orchestrator's launcher: the worker, its health
    endpoint on the inherited socket ``fd`` (see `run_logged`); never returns."""
    run_logged(main, argv, env, log_path, fd)


if __name__ == "__main__":
    main()
