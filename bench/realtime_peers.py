"""The realtime benchmark's peers on Redis: the bare redis-py loop (the ceiling) and the same loop
as a Bytewax dataflow in its own venv, measured the same way.

Part of ``bench/realtime.py``, which describes the method."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import (
    ensure_venv,
    tree_cpu,
    venv_version,
    wait_until,
)
from realtime_load import Phase, Result, closed_loop, open_loop, open_loop_reads, stream_events
from serving_peers import Processes

from modelyard.apps.realtime_demo.clickstream import Shop
from modelyard.apps.realtime_demo.scoring import FEATURES, features

# the ceiling: a bare loop on redis-py -----------------------------------------------------------
SCRIPT = Path(__file__).resolve().parent / "realtime.py"
"""The benchmark's entry point, which runs the redis-py worker (``--redis-worker``)."""
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
    """The hand-written loop: up to 100 triggers at a time from a stream (consumer group), each
    user's last 100 events, the model once on the whole batch, the predictions and the acks in
    one pipeline. Its own pending entries first after a restart."""
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
        if not entries:
            continue
        fetch = r.pipeline(transaction=False)
        triggers = []
        for entry_id, fields in entries:
            user, n = fields[b"u"].decode(), int(fields[b"n"])
            fetch.lrange(f"{prefix}:u:{user}", max(0, n - 100), n - 1)
            triggers.append((entry_id, user, n))
        rows, lasts = [], []
        for (_, user, n), raw in zip(triggers, fetch.execute(), strict=True):
            events = [json.loads(item) for item in raw]
            history = History(
                [
                    RawEvent(n - len(events) + k + 1, e["event_id"], user, e["type"], 0.0, 0.0, e)
                    for k, e in enumerate(events)
                ]
            )
            row = features(history)
            rows.append([row[name] for name in FEATURES])
            lasts.append(events[-1])
        values = model.predict_proba(rows)[:, 1]  # the batch in one call, as modelyard's score
        written = time.time()
        pipe = r.pipeline()
        for (entry_id, user, n), trigger, value in zip(triggers, lasts, values, strict=True):
            body = json.dumps(
                {
                    "value": float(value),
                    "event_id": trigger["event_id"],
                    "seq": n,
                    "written_at": written,
                }
            )
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
    settle: Callable[[], None] | None = None,
) -> None:
    """Ingest, trigger-to-prediction per rate and reads of a peer whose worker records each
    trigger's latency in the hash ``{prefix}:lat`` and the latest prediction in ``{prefix}:p:``;
    ``settle``, if given, is called between the ingest figures and the rates."""
    raw = stream_events(shop, args.events, 10, "b")
    chunks = [[{**e, "type": "view"} for e in raw[i : i + 1000]] for i in range(0, len(raw), 1000)]
    took, _ = closed_loop(chunks, args.ingest_threads, send)
    result.batched = len(raw) / took
    single = [{**e, "type": "view"} for e in stream_events(shop, args.single, 20, "o")]
    took, result.single_latency = closed_loop(single, args.single_concurrency, lambda e: send([e]))
    result.single = len(single) / took
    if settle is not None:
        settle()
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
            str(SCRIPT),
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


# The triggers of one activation (what the dataflow hands on at once), the model called once on
# all of them, as modelyard's batched score and the other peers do.
def score(items):
    rows = []
    for _, (_, events) in items:
        history = History([RawEvent(n, e["event_id"], e["user_id"], e["type"], 0.0, 0.0, e)
                           for n, e in enumerate(events, 1)])
        row = features(history)
        rows.append([row[name] for name in FEATURES])
    values = MODEL.predict_proba(rows)[:, 1] if rows else []
    return [(user, (event, float(v))) for (user, (event, _)), v in zip(items, values)]


flow = Dataflow("realtime")
keyed = op.key_on("user", op.input("in", flow, Source()), lambda e: e["user_id"])
triggered = op.filter_map_value("triggers", op.stateful_map("history", keyed, keep), lambda x: x)
op.output("out", op.flat_map_batch("score", triggered, score), Sink())
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
