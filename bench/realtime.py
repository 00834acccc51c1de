"""Realtime benchmark: events in, stored predictions out, on one machine and one synthetic stream.

The stream: the shop of ``modelyard.apps.realtime_demo.clickstream`` (Zipf-skewed users, so some
are hot; sessions; about 10 % of events are ``add_to_cart``, the triggers). The model: a
scikit-learn ``GradientBoostingClassifier`` trained here on the same features
(``modelyard.apps.realtime_demo.scoring``: the user's last 100 events), called on every trigger.

Targets, each started, measured and stopped before the next:

- ``modelyard``: ``python -m modelyard up`` on a temporary home, embedded backends (SQLite).
- ``modelyard-scale``: the same with the raw log on PostgreSQL, the queue on NATS JetStream and the
  predictions on Redis (``--pg``, ``--nats``, ``--redis``).
- ``redis``: the ceiling, a bare hand-written loop on redis-py: ingest appends to a per-user list
  and, for a trigger, to a Redis stream; one worker process reads the stream with a consumer
  group, reads the user's last 100 events, predicts, ``SET``s the prediction and acks. No HTTP.
- ``bytewax``: the same loop as a Bytewax dataflow in its own venv (``bench/.venvs/bytewax``,
  created on first use): events appended to a Redis stream, read by a source partition, the last
  100 events per user kept by ``stateful_map``, the same features and model, predictions and
  latencies written to Redis by a sink. Its kill -9 row is not measured (no recovery store).
- ``feast``: not written yet (a push source keeps each user's latest feature values, not a
  history of events to compute them from); asked for, it says so.

Per target: durable ingest events/s batched (1,000 per request, ``--ingest-threads`` senders)
and one event per request (``--single-concurrency`` in flight) with p50/p99; then, at each of
``--rates`` events/s for ``--seconds`` (open loop: a batch every 10 ms whatever the answers),
trigger-to-stored-prediction p50/p99/max (the store's ``written_at`` minus the event's ingest
time, both this machine's clock), predictions missing after a drain, and CPU seconds of the
target's processes per 1,000 events; the highest rate with p99 under 100 ms and none missing;
prediction reads at ``--read-rate`` (through the gateway for modelyard) p50/p99; and kill -9 of
the worker (and of the gateway for modelyard) in the middle of a stream: lost, duplicated and
out-of-order counts.

Run it (tiny sizes check the script in under a minute; the defaults take several minutes):

    .venv/bin/python bench/realtime.py --targets modelyard --events 2000 --single 200 \\
        --rates 200 --seconds 2 --reads 200 --kill-events 300
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _harness import (
    UP,
    ensure_venv,
    percentile,
    platform_env,
    tree_cpu,
    venv_version,
    wait_until,
)

from modelyard.apps.realtime_demo.clickstream import Shop, sessions
from modelyard.apps.realtime_demo.scoring import FEATURES, features
from serving import Processes, read_response

NAMESPACE, STREAM, RAW, DEPLOYMENT = "bench", "clicks", "raw", "scorer"
SCORE = "modelyard.apps.realtime_demo.scoring:score"
TICK_S = 0.01
SUSTAINED_P99_S = 0.100


@dataclass
class Phase:
    rate: float
    sent: int = 0
    triggers: int = 0
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    cpu_per_1k: float = 0.0

    def sustained(self) -> bool:
        return not self.missing and bool(self.latencies) and p(self.latencies, 0.99) < 0.1


@dataclass
class Result:
    name: str
    batched: float = 0.0
    single: float = 0.0
    single_latency: list[float] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    reads: list[float] = field(default_factory=list)
    kill: str = "-"
    note: str = ""


def void(_: object) -> None:
    """A call whose answer does not matter, as a callback that returns nothing."""


def p(values: list[float], fraction: float) -> float:
    return percentile(sorted(values), fraction) if values else float("nan")


def ms(values: list[float], *fractions: float) -> str:
    return "/".join(f"{p(values, f) * 1000:.1f}" for f in fractions) if values else "-"


def stream_events(shop: Shop, count: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` events of the shop, in order; no ``ts``: the event time is the ingest time."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        for event in sessions(shop, max(1, count // 6), 0, 3600, seed + len(found), prefix):
            event.pop("ts")
            found.append(event)
    return found[:count]


def train_model(shop: Shop, folder: Path) -> Path:
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier

    from modelyard.realtime.history import History
    from modelyard.realtime.streams import RawEvent

    per_user: dict[str, list[RawEvent]] = {}
    rows, labels = [], []
    events = list(sessions(shop, 3000, 0, 86400, 1, "t"))
    bought = {e["session"] for e in events if e["type"] == "purchase"}
    for seq, e in enumerate(events, 1):
        raw = RawEvent(seq, str(e["event_id"]), str(e["user_id"]), str(e["type"]), 0.0, 0.0, e)
        per_user.setdefault(raw.entity, []).append(raw)
        if raw.type == "add_to_cart":
            row = features(History(per_user[raw.entity][-100:]))
            rows.append([row[name] for name in FEATURES])
            labels.append(int(e["session"] in bought))
    model = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)
    model.fit(rows, labels)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    return folder


# the sender: open loop at a fixed rate ----------------------------------------------------------
def open_loop(
    events: list[dict[str, Any]], rate: float, send: Callable[[list[dict[str, Any]]], None]
) -> float:
    """Sends ``events`` at ``rate``/s in batches every TICK_S from threads, so a slow answer does
    not slow the schedule; returns the seconds it took."""
    per_tick = max(1, round(rate * TICK_S))
    batches = [events[i : i + per_tick] for i in range(0, len(events), per_tick)]
    started = time.monotonic()
    threads: list[threading.Thread] = []
    for n, batch in enumerate(batches):
        time.sleep(max(0.0, started + n * TICK_S - time.monotonic()))
        thread = threading.Thread(target=send, args=(batch,))
        thread.start()
        threads.append(thread)
        threads = [t for t in threads if t.is_alive()]
    for thread in threads:
        thread.join(60)
    return time.monotonic() - started


def closed_loop(
    items: list[Any], threads: int, call: Callable[[Any], None]
) -> tuple[float, list[float]]:
    """``call`` on every item from ``threads`` threads; (seconds, latency of each call)."""
    latencies: list[float] = []
    chunks = [items[i::threads] for i in range(threads)]

    def run(chunk: list[Any]) -> None:
        for item in chunk:
            began = time.perf_counter()
            call(item)
            latencies.append(time.perf_counter() - began)

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.monotonic() - started, latencies


async def open_loop_reads(count: int, rate: float, read: Callable[[int], Any]) -> list[float]:
    """``count`` awaited ``read(n)`` at ``rate``/s, each at its scheduled time; latencies."""
    latencies: list[float] = []
    started = time.perf_counter()

    async def one(n: int) -> None:
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        began = time.perf_counter()
        await read(n)
        latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(one(n) for n in range(count)))
    return latencies


class RawPool:
    """A few kept-alive HTTP/1.1 connections on raw asyncio streams: a load generator that costs
    far less CPU than an HTTP library, so the client is not what is measured."""

    def __init__(self, port: int, headers: dict[str, str], size: int) -> None:
        self.port, self.size = port, size
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = (
            asyncio.Queue()
        )
        for _ in range(size):
            self.free.put_nowait(None)

    async def call(self, method: str, path: str, body: bytes = b"") -> int:
        connection = await self.free.get()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", self.port)
            reader, writer = connection
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.head}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            status, keep = await read_response(reader)
            if not keep:
                writer.close()
                connection = None
            return status
        except (OSError, asyncio.IncompleteReadError):
            connection = None
            raise
        finally:
            self.free.put_nowait(connection)


async def raw_closed_loop(
    pool: RawPool, calls: list[tuple[str, str, bytes]]
) -> tuple[float, list[float]]:
    """Every call, ``pool.size`` at a time; (seconds, latencies)."""
    latencies: list[float] = []
    todo = iter(calls)

    async def worker() -> None:
        for method, path, body in todo:
            began = time.perf_counter()
            status = await pool.call(method, path, body)
            if status >= 300:
                raise RuntimeError(f"{method} {path} answered {status}")
            latencies.append(time.perf_counter() - began)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(pool.size)))
    return time.monotonic() - started, latencies


# modelyard ---------------------------------------------------------------------------------------
def bench_modelyard(
    name: str,
    env_extra: dict[str, str],
    args: argparse.Namespace,
    work: Path,
    procs: Processes,
    model: Path,
    shop: Shop,
) -> Result:
    from modelyard.client import Client
    from modelyard.realtime.backends import open_prediction_store
    from modelyard.registry.versions import VersionSpec
    from modelyard.settings import Settings

    home = work / name
    started = platform_env(home, **env_extra)
    api, gateway, env = started.api_port, started.gateway_port, started.env
    platform = procs.start(name, UP, env)
    url = f"http://127.0.0.1:{api}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/api/v1/health").is_success
        except httpx.TransportError:
            return False

    wait_until("the control plane", healthy, 60, platform)
    key = (home / "admin.key").read_text().strip()
    client = Client(url, key, cache_dir=home / "pulled", gateway_url=f"http://127.0.0.1:{gateway}")
    settings = Settings(
        home=home, **{k.removeprefix("MODELYARD_").lower(): v for k, v in env_extra.items()}
    )
    client.create_namespace(NAMESPACE)
    client.realtime.create_stream(NAMESPACE, RAW)
    client.realtime.create_stream(NAMESPACE, STREAM)
    client.push(f"{NAMESPACE}/purchase", model, VersionSpec(runtime="sklearn"))
    client.realtime.create(
        NAMESPACE,
        DEPLOYMENT,
        stream=STREAM,
        function=SCORE,
        model="purchase@latest",
        rule={"types": ["add_to_cart"]},
    )
    auth = {"Authorization": f"Bearer {key}"}
    base = f"http://127.0.0.1:{gateway}"
    path = f"/{NAMESPACE}/streams/{{}}/events"
    http = httpx.Client(
        base_url=base,
        headers=auth,
        timeout=30,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
    )

    def post(stream: str, body: Any) -> httpx.Response:
        while True:
            answer = http.post(path.format(stream), json=body)
            if answer.status_code == 429:
                time.sleep(float(answer.headers.get("retry-after", "1")))
                continue
            answer.raise_for_status()
            return answer

    wait_until(
        "the streams at the gateway",
        lambda: http.post(path.format(RAW), json=[]).status_code in (200, 422),
        30,
        platform,
    )
    warm = {"event_id": "warmup", "user_id": "warmup", "type": "add_to_cart"}
    post(STREAM, warm)
    wait_until(
        "the worker",
        lambda: http.get(f"/{NAMESPACE}/predictions/{DEPLOYMENT}/warmup").status_code == 200,
        120,
        platform,
    )
    result = Result(name)

    # ingest: batched, then one event per request (a stream no deployment reads)
    raw = stream_events(shop, args.events, 10, "b")
    chunks = [raw[i : i + 1000] for i in range(0, len(raw), 1000)]
    took, _ = closed_loop(chunks, args.ingest_threads, lambda c: post(RAW, c))
    result.batched = len(raw) / took
    single = stream_events(shop, args.single, 20, "o")
    pool = RawPool(gateway, auth, args.single_concurrency)
    calls = [("POST", path.format(RAW), json.dumps(e).encode()) for e in single]
    took, result.single_latency = asyncio.run(raw_closed_loop(pool, calls))
    result.single = len(single) / took

    # trigger to stored prediction, per rate
    predictions = open_prediction_store(settings.realtime_predictions_url)
    key_ = f"{NAMESPACE}/{DEPLOYMENT}"
    for n, rate in enumerate(args.rates):
        events = stream_events(shop, int(rate * args.seconds), 100 + n, f"r{n}-")
        triggers = {e["event_id"]: e["user_id"] for e in events if e["type"] == "add_to_cart"}
        before = sum(cpu for _, cpu in tree_cpu(platform.process.pid).values())
        open_loop(events, rate, lambda batch: void(post(STREAM, batch)))

        def drained() -> bool:
            lag = client.realtime.lag(NAMESPACE, DEPLOYMENT)
            return lag["events"] == 0

        with contextlib.suppress(Exception):
            wait_until("the lag to drain", drained, max(30.0, args.seconds * 3), platform)
        after = sum(cpu for _, cpu in tree_cpu(platform.process.pid).values())
        phase = Phase(
            rate, len(events), len(triggers), cpu_per_1k=(after - before) * 1000 / len(events)
        )
        found = {}
        for user in set(triggers.values()):
            for prediction in predictions.history(key_, user, 10_000, time.time()):
                found[prediction.event_id] = prediction.written_at - prediction.event_time
        phase.latencies = [found[e] for e in triggers if e in found]
        phase.missing = len(triggers) - len(phase.latencies)
        result.phases.append(phase)

    # reads through the gateway
    users = sorted({e["user_id"] for e in events if e["type"] == "add_to_cart"}) or ["warmup"]

    async def reads() -> list[float]:
        pool = RawPool(gateway, auth, 64)

        async def read(n: int) -> None:
            user = users[n % len(users)]
            status = await pool.call("GET", f"/{NAMESPACE}/predictions/{DEPLOYMENT}/{user}")
            if status != 200:
                raise RuntimeError(f"a prediction read answered {status}")

        return await open_loop_reads(args.reads, args.read_rate, read)

    result.reads = asyncio.run(reads())
    result.kill = kill_modelyard(home, shop, args, post, settings)
    http.close()
    client.close()
    predictions.close()
    procs.stop(platform)
    return result


def kill_modelyard(
    home: Path, shop: Shop, args: argparse.Namespace, post: Callable[..., Any], settings: Any
) -> str:
    """kill -9 of the worker, then of the gateway, while events go in 10 per request; counts."""
    from modelyard.realtime.backends import open_event_store, open_prediction_store

    events = stream_events(shop, args.kill_events, 500, "k")
    acked: list[str] = []

    def send() -> None:
        for i in range(0, len(events), 10):
            batch = events[i : i + 10]
            while True:
                try:
                    post(STREAM, batch)
                    break
                except (httpx.TransportError, httpx.HTTPStatusError):
                    time.sleep(0.05)
            acked.extend(e["event_id"] for e in batch)

    sender = threading.Thread(target=send)
    sender.start()
    state = home / "realtime" / "workers" / f"{NAMESPACE}--{DEPLOYMENT}.json"
    wait_until("a third sent", lambda: len(acked) >= len(events) // 3, 120)
    os.kill(int(json.loads(state.read_text())["pid"]), signal.SIGKILL)
    wait_until("two thirds sent", lambda: len(acked) >= 2 * len(events) // 3, 120)
    os.kill(int((home / "gateway.pid").read_text().split()[0]), signal.SIGKILL)
    sender.join(300)
    log = open_event_store(settings.realtime_events_url)
    store = open_prediction_store(settings.realtime_predictions_url)
    users = sorted({e["user_id"] for e in events})
    triggers = {e["event_id"] for e in events if e["type"] == "add_to_cart"}

    def predicted() -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for user in users:
            found[user] = store.history(f"{NAMESPACE}/{DEPLOYMENT}", user, 100_000, time.time())
        return found

    def all_predicted() -> bool:
        return triggers <= {p.event_id for ps in predicted().values() for p in ps}

    with contextlib.suppress(Exception):
        wait_until("a prediction for every trigger", all_predicted, 120)
    ids: Counter[str] = Counter()
    for user in users:
        ids.update(e.event_id for e in log.history(f"{NAMESPACE}/{STREAM}", user, None, 100_000))
    lost = sum(1 for i in acked if i not in ids)
    duplicated = sum(1 for i in acked if ids[i] > 1)
    made = predicted()
    kept = [p for ps in made.values() for p in ps if p.event_id in triggers]
    extra = len(kept) - len({p.event_id for p in kept})
    unordered = 0
    for ps in made.values():
        by_write = sorted((p for p in ps if p.event_id in triggers), key=lambda p: p.written_at)
        unordered += sum(a.seq > b.seq for a, b in itertools.pairwise(by_write))
    missing = len(triggers - {p.event_id for p in kept})
    log.close()
    store.close()
    return f"lost {lost}, duplicated {duplicated + extra}, out of order {unordered}" + (
        f", {missing} triggers without a prediction after 120 s" if missing else ""
    )


# the ceiling: a bare loop on redis-py -----------------------------------------------------------
_INGEST = """
for i = 1, #ARGV, 3 do
  local n = redis.call('RPUSH', KEYS[1] .. ARGV[i], ARGV[i + 1])
  if ARGV[i + 2] == '1' then
    redis.call('XADD', KEYS[2], '*', 'u', ARGV[i], 'n', n)
  end
end
return 1
"""


def redis_worker(url: str, prefix: str, model_path: str) -> None:
    """The hand-written loop: triggers from a stream (consumer group), the user's last 100
    events, the model, the prediction, the ack. Its own pending entries first after a restart."""
    import joblib
    import redis

    from modelyard.realtime.history import History
    from modelyard.realtime.streams import RawEvent

    r = redis.Redis.from_url(url)
    model = joblib.load(model_path)
    stream = f"{prefix}:triggers"
    with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: a restart
        r.xgroup_create(stream, "workers", id="0", mkstream=True)
    r.set(f"{prefix}:ready", os.getpid())
    cursor = "0"
    while True:
        answer = r.xreadgroup("workers", "w", {stream: cursor}, count=100, block=1000)
        entries = answer[0][1] if answer else []
        if cursor == "0" and not entries:
            cursor = ">"
            continue
        for entry_id, fields in entries:
            user, n = fields[b"u"].decode(), int(fields[b"n"])
            raw = r.lrange(f"{prefix}:u:{user}", max(0, n - 100), n - 1)
            events = [json.loads(item) for item in raw]
            history = History(
                [
                    RawEvent(n - len(events) + k + 1, e["event_id"], user, e["type"], 0.0, 0.0, e)
                    for k, e in enumerate(events)
                ]
            )
            row = features(history)
            value = float(model.predict_proba([[row[name] for name in FEATURES]])[0][1])
            trigger = events[-1]
            written = time.time()
            body = json.dumps(
                {"value": value, "event_id": trigger["event_id"], "seq": n, "written_at": written}
            )
            pipe = r.pipeline()
            pipe.set(f"{prefix}:p:{user}", body)
            pipe.hsetnx(f"{prefix}:lat", trigger["event_id"], written - trigger["ingested_at"])
            pipe.rpush(f"{prefix}:done:{user}", n)
            pipe.xack(stream, "workers", entry_id)
            pipe.execute()


def measure_on_redis(
    result: Result,
    r: Any,
    prefix: str,
    worker: Any,
    send: Callable[[list[dict[str, Any]]], None],
    args: argparse.Namespace,
    shop: Shop,
) -> None:
    """Ingest, trigger-to-prediction per rate and reads of a peer whose worker records each
    trigger's latency in the hash ``{prefix}:lat`` and the latest prediction in ``{prefix}:p:``."""
    raw = stream_events(shop, args.events, 10, "b")
    chunks = [[{**e, "type": "view"} for e in raw[i : i + 1000]] for i in range(0, len(raw), 1000)]
    took, _ = closed_loop(chunks, args.ingest_threads, send)
    result.batched = len(raw) / took
    single = [{**e, "type": "view"} for e in stream_events(shop, args.single, 20, "o")]
    took, result.single_latency = closed_loop(single, args.single_concurrency, lambda e: send([e]))
    result.single = len(single) / took
    for n, rate in enumerate(args.rates):
        events = stream_events(shop, int(rate * args.seconds), 100 + n, f"r{n}-")
        triggers = [e["event_id"] for e in events if e["type"] == "add_to_cart"]
        before = sum(cpu for _, cpu in tree_cpu(worker.process.pid).values())
        open_loop(events, rate, send)

        def drained(triggers: list[str] = triggers) -> bool:
            return bool(r.hexists(f"{prefix}:lat", triggers[-1])) if triggers else True

        with contextlib.suppress(Exception):
            wait_until("the worker", drained, max(30.0, args.seconds * 3), worker)
        after = sum(cpu for _, cpu in tree_cpu(worker.process.pid).values())
        phase = Phase(
            rate, len(events), len(triggers), cpu_per_1k=(after - before) * 1000 / len(events)
        )
        found = r.hmget(f"{prefix}:lat", triggers) if triggers else []
        phase.latencies = [float(v) for v in found if v is not None]
        phase.missing = len(triggers) - len(phase.latencies)
        result.phases.append(phase)
    users = sorted({e["user_id"] for e in events if e["type"] == "add_to_cart"}) or ["nobody"]

    async def reads() -> list[float]:
        import redis.asyncio as aredis

        pool = aredis.BlockingConnectionPool.from_url(args.redis, max_connections=32)
        reader = aredis.Redis(connection_pool=pool)

        async def read(n: int) -> None:
            await reader.get(f"{prefix}:p:{users[n % len(users)]}")

        try:
            return await open_loop_reads(args.reads, args.read_rate, read)
        finally:
            await reader.aclose()

    result.reads = asyncio.run(reads())


def bench_redis(
    args: argparse.Namespace, work: Path, procs: Processes, model: Path, shop: Shop
) -> Result:
    import redis

    prefix = f"bench-{os.getpid()}"
    r = redis.Redis.from_url(args.redis)
    ingest = r.register_script(_INGEST)
    keys = [f"{prefix}:u:", f"{prefix}:triggers"]

    def start() -> Any:
        command = [
            sys.executable,
            __file__,
            "--redis-worker",
            args.redis,
            prefix,
            str(model / "model.joblib"),
        ]
        r.delete(f"{prefix}:ready")
        started = procs.start("redis-worker", command, dict(os.environ))
        wait_until("the redis worker", lambda: bool(r.exists(f"{prefix}:ready")), 60, started)
        return started

    def send(batch: list[dict[str, Any]]) -> None:
        now = time.time()
        argv: list[Any] = []
        for e in batch:
            argv += [
                e["user_id"],
                json.dumps({**e, "ingested_at": now}),
                "1" if e["type"] == "add_to_cart" else "0",
            ]
        ingest(keys=keys, args=argv)

    worker = start()
    result = Result("redis", note="no HTTP; worker CPU only; Redis' own persistence")
    measure_on_redis(result, r, prefix, worker, send, args, shop)
    # kill -9 of the worker mid-stream, then a new one
    events = stream_events(shop, args.kill_events, 500, "k")
    acked: list[str] = []

    def sender() -> None:
        for i in range(0, len(events), 10):
            send(events[i : i + 10])
            acked.extend(e["event_id"] for e in events[i : i + 10])

    thread = threading.Thread(target=sender)
    thread.start()
    wait_until("half sent", lambda: len(acked) >= len(events) // 2, 120)
    os.kill(worker.process.pid, signal.SIGKILL)
    procs.stop(worker)
    worker = start()
    thread.join(300)
    triggers = [e["event_id"] for e in events if e["type"] == "add_to_cart"]
    with contextlib.suppress(Exception):
        wait_until("every trigger", lambda: all(r.hmget(f"{prefix}:lat", triggers)), 120, worker)
    users = sorted({e["user_id"] for e in events})
    ids: Counter[str] = Counter()
    unordered = 0
    for user in users:
        ids.update(json.loads(item)["event_id"] for item in r.lrange(f"{prefix}:u:{user}", 0, -1))
        done = [int(x) for x in r.lrange(f"{prefix}:done:{user}", 0, -1)]
        unordered += sum(a > b for a, b in itertools.pairwise(done))
    lost = sum(1 for i in acked if i not in ids)
    duplicated = sum(1 for i in acked if ids[i] > 1)
    result.kill = f"lost {lost}, duplicated {duplicated}, out of order {unordered}"
    procs.stop(worker)
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        r.delete(key)
    return result


# Bytewax: the same loop as a dataflow in its own venv ---------------------------------------------
BYTEWAX = (
    "bytewax==0.21.1",
    "scikit-learn==1.9.1",
    "joblib==1.6.0",
    "redis==8.2.0",
    "pydantic==2.14.4",
    "orjson==3.13.0",
)
BYTEWAX_FLOW = """
import json, os, time

import joblib, redis
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from modelyard.apps.realtime_demo.scoring import FEATURES, features
from modelyard.realtime.history import History
from modelyard.realtime.streams import RawEvent

URL, PREFIX = os.environ["BENCH_REDIS"], os.environ["BENCH_PREFIX"]
MODEL = joblib.load(os.environ["BENCH_MODEL"])


class Part(StatefulSourcePartition):
    def __init__(self, resume):
        self.r = redis.Redis.from_url(URL)
        self.last = resume or "0"
        self.r.set(PREFIX + ":ready", 1)

    def next_batch(self):
        got = self.r.xread({PREFIX + ":events": self.last}, count=1000, block=20)
        if not got:
            return []
        entries = got[0][1]
        self.last = entries[-1][0].decode()
        return [json.loads(fields[b"e"]) for _, fields in entries]

    def snapshot(self):
        return self.last


class Source(FixedPartitionedSource):
    def list_parts(self):
        return ["0"]

    def build_part(self, step_id, for_key, resume_state):
        return Part(resume_state)


class Part_(StatelessSinkPartition):
    def __init__(self):
        self.r = redis.Redis.from_url(URL)

    def write_batch(self, items):
        pipe = self.r.pipeline()
        for user, (event, value) in items:
            written = time.time()
            body = json.dumps({"value": value, "event_id": event["event_id"]})
            pipe.set(PREFIX + ":p:" + user, body)
            pipe.hsetnx(PREFIX + ":lat", event["event_id"], written - event["ingested_at"])
        pipe.execute()


class Sink(DynamicSink):
    def build(self, step_id, worker_index, worker_count):
        return Part_()


def keep(state, event):
    state = (state or [])[-99:] + [event]
    return state, (event, state) if event["type"] == "add_to_cart" else None


def score(pair):
    event, events = pair
    history = History([RawEvent(n, e["event_id"], e["user_id"], e["type"], 0.0, 0.0, e)
                       for n, e in enumerate(events, 1)])
    row = features(history)
    return event, float(MODEL.predict_proba([[row[name] for name in FEATURES]])[0][1])


flow = Dataflow("realtime")
keyed = op.key_on("user", op.input("in", flow, Source()), lambda e: e["user_id"])
triggered = op.filter_map_value("triggers", op.stateful_map("history", keyed, keep), lambda x: x)
op.output("out", op.map_value("score", triggered, score), Sink())
"""


def bench_bytewax(
    args: argparse.Namespace, work: Path, procs: Processes, model: Path, shop: Shop
) -> Result:
    import redis

    python, _ = ensure_venv("bytewax", BYTEWAX)
    prefix = f"bench-bytewax-{os.getpid()}"
    r = redis.Redis.from_url(args.redis)
    (work / "bytewax_flow.py").write_text(BYTEWAX_FLOW)
    src = Path(__file__).resolve().parent.parent / "src"
    env = {
        **os.environ,
        "PYTHONPATH": f"{work}{os.pathsep}{src}",
        "BENCH_REDIS": args.redis,
        "BENCH_PREFIX": prefix,
        "BENCH_MODEL": str(model / "model.joblib"),
    }
    worker = procs.start(
        "bytewax", [str(python), "-m", "bytewax.run", "bytewax_flow:flow"], env, work
    )
    wait_until("the dataflow", lambda: bool(r.exists(f"{prefix}:ready")), 120, worker)

    def send(batch: list[dict[str, Any]]) -> None:
        now = time.time()
        pipe = r.pipeline(transaction=False)
        for e in batch:
            pipe.xadd(f"{prefix}:events", {"e": json.dumps({**e, "ingested_at": now})})
        pipe.execute()

    version = venv_version("bytewax", "bytewax")
    result = Result("bytewax", note=f"bytewax {version}; events in a Redis stream; no HTTP")
    try:
        measure_on_redis(result, r, prefix, worker, send, args, shop)
        result.kill = "not measured (no recovery store configured)"
    finally:
        procs.stop(worker)
        for key in r.scan_iter(match=f"{prefix}:*", count=1000):
            r.delete(key)
    return result


# report -----------------------------------------------------------------------------------------
def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        "\ningest (durable when answered): batched events/s | one per request: events/s, p50/p99 ms"
    )
    for r in results:
        print(
            f"  {r.name:16} {r.batched:>10,.0f} | {r.single:>8,.0f}  "
            f"{ms(r.single_latency, 0.5, 0.99)}"
        )
    print(
        "\ntrigger -> stored prediction, per rate (events/s; ~10 % triggers): p50/p99/max ms, "
        "missing, CPU s per 1k events"
    )
    for r in results:
        for ph in r.phases:
            print(
                f"  {r.name:16} {ph.rate:>8,.0f}/s  {ph.triggers:>6} triggers  "
                f"{ms(ph.latencies, 0.5, 0.99, 1.0):>22}  missing {ph.missing}  "
                f"cpu {ph.cpu_per_1k:.2f}"
            )
        best = best_rate(r)
        print(
            f"  {r.name:16} highest rate with p99 < 100 ms: "
            f"{f'{best:,.0f}/s' if best else 'none of those tried'}"
        )
    print(f"\nprediction reads at {args.read_rate:,.0f}/s: p50/p99 ms")
    for r in results:
        print(f"  {r.name:16} {ms(r.reads, 0.5, 0.99)}")
    print("\nkill -9 in the middle of a stream")
    for r in results:
        print(f"  {r.name:16} {r.kill}" + (f"   ({r.note})" if r.note else ""))
    goals(results)


def goals(results: list[Result]) -> None:
    """The issue's goals on 2 cores, for each modelyard target: met, or not."""
    peers = [r for r in results if not r.name.startswith("modelyard")]
    best_peer = max((best_rate(r) for r in peers), default=0.0)
    print("\ngoals (issue 13, on 2 cores)")
    for r in results:
        if not r.name.startswith("modelyard"):
            continue
        at_1k = [ph for ph in r.phases if ph.rate >= 10_000] or r.phases[-1:]
        trigger_p99 = p(at_1k[0].latencies, 0.99) if at_1k else float("nan")
        rate = at_1k[0].rate if at_1k else 0.0
        checks = [
            ("batched ingest >= 20k events/s", r.batched >= 20_000),
            (
                "one-event ingest >= 4k/s, p99 <= 25 ms",
                r.single >= 4000 and p(r.single_latency, 0.99) <= 0.025,
            ),
            (
                f"trigger -> prediction p99 <= 50 ms at {rate:,.0f} events/s",
                trigger_p99 <= 0.050,
            ),
            ("prediction read p99 <= 5 ms", p(r.reads, 0.99) <= 0.005),
            (
                f"sustains at least the best peer's rate ({best_peer:,.0f}/s)",
                best_rate(r) >= best_peer,
            ),
            (
                "kill -9: 0 lost, 0 duplicated, 0 out of order",
                r.kill.startswith("lost 0, duplicated 0, out of order 0"),
            ),
        ]
        for what, met in checks:
            print(f"  {r.name:16} {'met    ' if met else 'NOT MET'}  {what}")


def best_rate(result: Result) -> float:
    return max((ph.rate for ph in result.phases if ph.sustained()), default=0.0)


@contextlib.contextmanager
def scale_backends(args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database, NATS streams and Redis keys of their own for one run (an
    earlier run's event ids would otherwise collapse this one's), removed afterwards."""
    import psycopg
    import redis

    name = f"bench_realtime_{os.getpid()}"
    admin = args.pg.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    prefix = f"bench-{os.getpid()}"
    try:
        yield {
            "MODELYARD_REALTIME_EVENTS_URL": f"{args.pg.rsplit('/', 1)[0]}/{name}",
            "MODELYARD_REALTIME_QUEUE_URL": f"{args.nats}?prefix={prefix}",
            "MODELYARD_REALTIME_PREDICTIONS_URL": f"{args.redis}?prefix={prefix}",
        }
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with redis.Redis.from_url(args.redis) as r:
            for key in r.scan_iter(match=f"{prefix}:*", count=1000):
                r.delete(key)
        asyncio.run(delete_nats(args.nats, prefix))


async def delete_nats(url: str, prefix: str) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    for stream in (f"{prefix}_triggers", f"{prefix}_dead", f"KV_{prefix}_cursors"):
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
    await nc.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/realtime.py")
    parser.add_argument("--targets", default="modelyard,modelyard-scale,redis,bytewax")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000, help="batched ingest")
    parser.add_argument("--single", type=int, default=10_000, help="one event per request")
    parser.add_argument("--ingest-threads", type=int, default=4)
    parser.add_argument("--single-concurrency", type=int, default=16)
    parser.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[1000.0, 2000.0, 5000.0, 10_000.0],
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per rate")
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--read-rate", type=float, default=2000.0)
    parser.add_argument("--kill-events", type=int, default=3000)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    shop = Shop(users=args.users)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as temp:
        work = Path(temp)
        procs = Processes(work)
        model = train_model(shop, work / "model")
        try:
            for target in args.targets.split(","):
                print(f"-- {target}", flush=True)
                if target == "modelyard":
                    results.append(bench_modelyard(target, {}, args, work, procs, model, shop))
                elif target == "modelyard-scale":
                    with scale_backends(args) as scale:
                        results.append(
                            bench_modelyard(target, scale, args, work, procs, model, shop)
                        )
                elif target == "redis":
                    results.append(bench_redis(args, work, procs, model, shop))
                elif target == "bytewax":
                    results.append(bench_bytewax(args, work, procs, model, shop))
                else:
                    print(f"   {target}: not written yet: no result")
        finally:
            procs.stop_all()
    report(results, args)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--redis-worker"]:
        redis_worker(*sys.argv[2:5])
    else:
        main()
