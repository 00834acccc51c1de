"""The realtime benchmark's modelyard targets: embedded, and at scale on PostgreSQL, NATS JetStream
and Redis (a database, streams and keys of their own per run); kill -9 of the worker and the
gateway in the middle of a stream.

Part of ``bench/realtime.py``, which describes the method."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from _harness import (
    UP,
    platform_env,
    tree_cpu,
    wait_until,
)
from realtime_load import (
    Phase,
    RawPool,
    Result,
    closed_loop,
    open_loop,
    open_loop_reads,
    raw_closed_loop,
    stream_events,
)
from serving_peers import Processes

from modelyard.apps.realtime_demo.clickstream import Shop

NAMESPACE, STREAM, RAW, DEPLOYMENT = "bench", "clicks", "raw", "scorer"
SCORE = "modelyard.apps.realtime_demo.scoring:score"


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
        history_limit=100,  # the score reads the last 100 events, as every peer's loop does
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
        before = tree_cpu(platform.process.pid)
        posts = Posts(gateway, auth, path.format(STREAM), events)
        open_loop(events, rate, posts.send)
        posts.close()

        def drained() -> bool:
            lag = client.realtime.lag(NAMESPACE, DEPLOYMENT)
            return lag["events"] == 0

        with contextlib.suppress(Exception):
            wait_until("the lag to drain", drained, max(30.0, args.seconds * 3), platform)
        after = tree_cpu(platform.process.pid)
        by: Counter[str] = Counter()
        for pid, (label, cpu) in after.items():
            by[label] += (cpu - before.get(pid, (label, 0.0))[1]) * 1000 / len(events)
        phase = Phase(rate, len(events), len(triggers), cpu_per_1k=sum(by.values()), cpu_by=by)
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
    result.kill = kill_modelyard(home, shop, args, post, settings, client)
    http.close()
    client.close()
    predictions.close()
    procs.stop(platform)
    return result


class Posts:
    """The rate phases' sender: kept-alive ``http.client`` connections shared by the open loop's
    threads, each batch's body joined from events encoded in advance. Far cheaper than an
    ``httpx`` call and a JSON encoding per batch, so the load generator takes less of the two
    cores the platform runs on. A 429 is retried after its Retry-After."""

    def __init__(
        self, port: int, headers: dict[str, str], path: str, events: list[dict[str, Any]]
    ) -> None:
        self.port, self.path = port, path
        self.headers = {**headers, "Content-Type": "application/json"}
        self.bodies = {id(e): orjson.dumps(e) for e in events}  # before the clock starts
        self.free: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()

    def send(self, batch: list[dict[str, Any]]) -> None:
        body = b"[" + b",".join(self.bodies[id(e)] for e in batch) + b"]"
        path = self.path
        try:
            connection = self.free.get_nowait()
        except queue.Empty:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while True:
            connection.request("POST", path, body, self.headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 429:
                break
            time.sleep(float(answer.getheader("retry-after") or "1"))
        if answer.status >= 300:
            raise RuntimeError(f"POST {path} answered {answer.status}")
        self.free.put(connection)

    def close(self) -> None:
        while True:
            try:
                self.free.get_nowait().close()
            except queue.Empty:
                return


def worker_pid(client: Any) -> int:
    """The pid of the realtime deployment's worker: its replica, as the API lists it."""
    found: list[int] = []

    def listed() -> bool:
        deployment = client.get_deployment(NAMESPACE, DEPLOYMENT)
        found[:] = [r.pid for v in deployment.revisions for r in v.replicas if r.pid]
        return bool(found)

    wait_until("the worker's pid", listed, 60)
    return found[0]


def kill_modelyard(
    home: Path,
    shop: Shop,
    args: argparse.Namespace,
    post: Callable[..., Any],
    settings: Any,
    client: Any,
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
    wait_until("a third sent", lambda: len(acked) >= len(events) // 3, 120)
    os.kill(worker_pid(client), signal.SIGKILL)
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
        # predictions written in one batch share their written_at: not out of order
        ours = (p for p in ps if p.event_id in triggers)
        by_write = sorted(ours, key=lambda p: (p.written_at, p.seq))
        unordered += sum(a.seq > b.seq for a, b in itertools.pairwise(by_write))
    missing = len(triggers - {p.event_id for p in kept})
    log.close()
    store.close()
    return f"lost {lost}, duplicated {duplicated + extra}, out of order {unordered}" + (
        f", {missing} triggers without a prediction after 120 s" if missing else ""
    )


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
