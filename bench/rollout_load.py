"""The rollout benchmark's clients and what they saw: answers read off raw connections, the load
that keeps requests going through a rollout, and the windows, runs and scenarios it is cut into.

Part of ``bench/rollout.py``, which describes the method."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from _harness import (
    REQUEST_FAILURES,
    percentile,
)

REQUEST_TIMEOUT_S = 10.0
ROLLED_BACK, FIRST_STEP, PROMOTED = "rolled back", "rolled back at the first step", "promoted"


# the load ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    sent: float  # time.time() when the request was sent
    done: float  # time.time() when its answer was read (or it failed)
    status: int  # 0: no answer (connection failed, timed out)
    revision: str  # x-modelyard-revision, "" when absent


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, str, bool]:
    """One whole response: its status, its revision header, whether the connection stays."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    headers: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()
        return status, headers.get(b"x-modelyard-revision", b"").decode(), False
    keep = headers.get(b"connection", b"").lower() != b"close"
    return status, headers.get(b"x-modelyard-revision", b"").decode(), keep


class Load:
    """Closed-loop clients through the gateway while the block runs; every answer is kept."""

    def __init__(self, port: int, path: str, token: str, workers: int) -> None:
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
        ).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        )
        self.request = head.encode() + body
        self.port = port
        self.workers = workers
        self.answers: list[Answer] = []  # appended by the load's thread only
        self.failures: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)))

    async def _worker(self) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while not self._stop.is_set():
            sent = time.time()
            try:
                if reader is None or writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    writer.write(self.request)
                    status, revision, keep = await read_answer(reader)
            except REQUEST_FAILURES as exc:
                status, revision, keep = 0, "", False
                self.failures[type(exc).__name__] += 1
            self.answers.append(Answer(sent, time.time(), status, revision))
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
            if status == 0:
                await asyncio.sleep(0.01)  # a refused connection must not spin the loop
        if writer is not None:
            writer.close()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT_S + 5)

    def first(self, since: int, revision: str | None = None, other: str | None = None) -> int:
        """Index of the first answer from ``since`` on by ``revision`` (or by anything but
        ``other``), -1 if none yet."""
        answers = self.answers[: len(self.answers)]
        for index in range(since, len(answers)):
            got = answers[index].revision
            if (revision is not None and got == revision) or (
                other is not None and got and got != other
            ):
                return index
        return -1


# figures -----------------------------------------------------------------------------------------
@dataclass
class Window:
    """What the clients saw between two instants: requests completed in [start, end]."""

    start: float
    end: float
    requests: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    by_revision: dict[str, tuple[int, int]] = field(default_factory=dict)  # requests, failed

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def share(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    @classmethod
    def of(cls, answers: Sequence[Answer], start: float, end: float) -> Window:
        window = cls(start, end)
        latencies = []
        statuses: Counter[str] = Counter()
        revisions: dict[str, list[int]] = {}
        for answer in answers:
            if not start <= answer.done <= end:
                continue
            window.requests += 1
            failed = answer.status != 200
            window.failed += failed
            statuses[str(answer.status or "no answer")] += 1
            counts = revisions.setdefault(answer.revision or "-", [0, 0])
            counts[0] += 1
            counts[1] += failed
            if not failed:
                latencies.append((answer.done - answer.sent) * 1000)
        latencies.sort()
        if latencies:
            window.p50_ms = percentile(latencies, 0.50)
            window.p99_ms = percentile(latencies, 0.99)
        window.statuses = dict(sorted(statuses.items()))
        window.by_revision = {name: (c[0], c[1]) for name, c in sorted(revisions.items())}
        return window


@dataclass
class CanaryRun:
    index: int
    outcome: str = ""  # the rollout's final state, or what went wrong
    push_s: float = 0.0
    commit_to_start_s: float | None = None
    canary_to_end_s: float | None = None
    commit_to_end_s: float | None = None
    gateway_s: float | None = None
    window: Window | None = None
    weight: int = 0  # the canary's percent at the step it reached
    step: int = 0
    reason: str = ""
    evidence: str = ""
    warmup: Window | None = None
    load: str = ""
    canary_requests: int = 0  # requests the canary answered in the window
    steps: list[str] = field(default_factory=list)  # each analysis the rollout recorded


@dataclass
class ReplaceRun:
    index: int
    outcome: str = ""
    push_s: float = 0.0
    commit_to_ready_s: float | None = None
    first_answer_s: float | None = None  # from ready_at to the first request it answered
    window: Window | None = None
    warmup: Window | None = None
    load: str = ""


@dataclass
class Scenario:
    name: str
    title: str
    good: dict[str, Any]
    bad: dict[str, Any]  # the new version, bad or not
    error_rate: float  # of the new version
    goal: str  # ROLLED_BACK, FIRST_STEP or PROMOTED
    workers: int = 0
    canary: list[CanaryRun] = field(default_factory=list)
    replace: list[ReplaceRun] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.name}, {self.workers} clients"

    def met(self, run: CanaryRun) -> bool:
        if self.goal == PROMOTED:
            return run.outcome == "promoted"
        return run.outcome == "rolled_back" and (self.goal == ROLLED_BACK or run.step == 0)
