"""The realtime benchmark's stream, model and load: the shop's events, the model trained on the same
features, open- and closed-loop senders, raw HTTP connections, and the figures kept per target.

Part of ``bench/realtime.py``, which describes the method."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    percentile,
)
from serving_load import read_response

from modelyard.apps.realtime_demo.clickstream import Shop, sessions
from modelyard.apps.realtime_demo.scoring import FEATURES, features

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
    cpu_by: dict[str, float] = field(default_factory=dict)
    """CPU seconds per 1k events of each kind of process (a forked worker keeps the name of the
    launcher that forked it)."""

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
    """``count`` awaited ``read(n)`` at ``rate``/s, each started at its scheduled time; latencies.

    Each read's task is made when its time comes, not all up front: making thousands of tasks
    at once stalls the client's event loop for the first reads, and that stall would be
    measured as the server's latency."""
    latencies: list[float] = []
    running: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        began = time.perf_counter()
        await read(n)
        latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        task = asyncio.ensure_future(one(n))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
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
