"""The serving benchmark's load: the generator (``bench/serving.py --loadgen``), the null server
(``--null-server``), a target's answer check, and one measured run of the generator against it.

Part of ``bench/serving.py``, which describes the method."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TypeVar

from _harness import (
    REQUEST_FAILURES,
    Ident,
    machine_busy,
    percentile,
    tree_cpu,
    tree_idents,
)

SAMPLE = [5.1, 3.5, 1.4, 0.2]
NAMESPACE = "bench"
SCRIPT = Path(__file__).resolve().parent / "serving.py"
"""The benchmark's entry point, which runs the generator and the null server as processes."""
RESULT_PREFIX = "BENCH-JSON "
REQUEST_TIMEOUT_S = 10.0
T = TypeVar("T")


# load generator (runs in a process of its own) ---------------------------------------------------
@dataclass
class LoadSpec:
    host: str
    port: int
    path: str
    body: str
    headers: dict[str, str]
    concurrency: int
    warmup_s: float
    seconds: float
    ramp_s: float = 0.0  # the workers start one after another over this many seconds
    timeout_s: float = REQUEST_TIMEOUT_S

    def request(self) -> bytes:
        body = self.body.encode()
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    ok: int
    errors: dict[str, int]
    window_s: float
    latencies_ms: dict[str, float]  # p50, p99, max, mean of the OK responses in the window
    client_cpu_s: float
    connections: int  # connections opened over the whole run, warm-up included
    workers: int
    loop: str

    @property
    def rps(self) -> float:
        return self.ok / self.window_s

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole response; its status, and whether the connection can be used again."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 17)
        await reader.readexactly(int(lower[at + 17 : end]))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif status >= 200 and status not in (204, 304):
        await reader.read()  # body delimited by the end of the connection
        return status, False
    return status, b"\r\nconnection: close" not in lower


async def generate(spec: LoadSpec) -> LoadResult:
    request = spec.request()
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds
    clock = time.perf_counter
    start = clock() + spec.warmup_s
    end = start + spec.seconds
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    opened = 0

    async def worker(delay: float) -> None:
        nonlocal opened
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        await asyncio.sleep(delay)
        while True:
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(spec.host, spec.port)
                    opened += 1
                began = clock()
                async with asyncio.timeout(spec.timeout_s):
                    writer.write(request)
                    status, keep = await read_response(reader)
                done = clock()
                if start <= done < end:
                    if status == 200:
                        latencies.append(done - began)
                    else:
                        errors[f"HTTP {status}"] += 1
                if not keep:
                    writer.close()
                    writer = reader = None
            except REQUEST_FAILURES as exc:
                if start <= clock() < end:
                    errors[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = reader = None
                await asyncio.sleep(0.01)  # a refused connection must not spin the loop

    step = spec.ramp_s / spec.concurrency
    tasks = [asyncio.create_task(worker(index * step)) for index in range(spec.concurrency)]
    await asyncio.sleep(start - clock())
    cpu = time.process_time()
    print("START", flush=True)
    await asyncio.sleep(end - clock())
    cpu = time.process_time() - cpu
    print("END", flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ordered = sorted(latencies)
    stats: dict[str, float] = {}
    if ordered:
        stats = {
            "p50": percentile(ordered, 0.50) * 1000,
            "p99": percentile(ordered, 0.99) * 1000,
            "max": ordered[-1] * 1000,
            "mean": sum(ordered) / len(ordered) * 1000,
        }
    return LoadResult(
        len(ordered), dict(errors), spec.seconds, stats, cpu, opened, spec.concurrency, ""
    )


def run_loop(main: Coroutine[Any, Any, T]) -> tuple[T, str]:
    """Run ``main`` on uvloop where it is installed, else on asyncio's loop; which one ran."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main), "asyncio"
    return uvloop.run(main), f"uvloop {metadata.version('uvloop')}"


def loadgen_main(raw: str) -> None:
    result, loop = run_loop(generate(LoadSpec(**json.loads(raw))))
    result.loop = loop
    print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)


# a minimal HTTP server: the generator's ceiling ------------------------------------------------
class NullProtocol(asyncio.Protocol):
    """Answers every request with the same small JSON; parses just enough HTTP/1.1 for that."""

    ANSWER = b'{"predictions":[0]}'
    RESPONSE = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(ANSWER)).encode()
        + b"\r\n\r\n"
        + ANSWER
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            lower = self.buffer[: head_end + 2].lower()
            at = lower.find(b"\r\ncontent-length:")
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 17)]) if at >= 0 else 0
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
            self.buffer = self.buffer[total:]
            self.transport.write(self.RESPONSE)


def null_server_main(port: int) -> None:
    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(NullProtocol, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    run_loop(serve())


# processes ---------------------------------------------------------------------------------------
@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    # every process seen in its tree: a replica outlives its parent if that dies first
    seen: set[Ident] = field(default_factory=set)

    def log_tail(self, lines: int = 25) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])


def http_call(
    port: int,
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if connection is None:
            conn.close()


def http_ok(port: int, path: str) -> Callable[[], bool]:
    return lambda: http_call(port, "GET", path, timeout=2.0)[0] == 200


# targets -----------------------------------------------------------------------------------------
@dataclass
class Target:
    family: str
    label: str
    settings: str
    port: int
    path: str
    body: str
    started: Started
    headers: dict[str, str] = field(default_factory=dict)

    def spec(self, concurrency: int, warmup_s: float, seconds: float) -> LoadSpec:
        return LoadSpec(
            "127.0.0.1",
            self.port,
            self.path,
            self.body,
            self.headers,
            concurrency,
            warmup_s,
            seconds,
            ramp_s=warmup_s / 2,
        )


@dataclass
class Row:
    target: str
    family: str
    settings: str
    result: LoadResult | None
    server_cores: float = 0.0
    server_split: dict[str, list[float]] = field(default_factory=dict)  # name: cores per process
    client_cores: float = 0.0
    machine_cores: float = 0.0
    answer: str = ""
    failure: str = ""

    @property
    def other_cores(self) -> float:
        return max(0.0, self.machine_cores - self.server_cores - self.client_cores)


def check_answer(target: Target) -> str:
    """One request before the load: it must answer 200; returns the body it sent back."""
    status, body = http_call(
        target.port, "POST", target.path, target.body, target.headers, timeout=30.0
    )
    text = body.decode(errors="replace")
    if status != 200:
        raise RuntimeError(f"{target.label}: HTTP {status} to the first request: {text[:300]}")
    return text


def drive(target: Target, spec: LoadSpec, logs: Path) -> Row:
    """Run the generator against ``target``; CPU of both sides sampled at the window's edges."""
    command = [sys.executable, str(SCRIPT), "--loadgen", json.dumps(asdict(spec))]
    server_pid = target.started.process.pid
    marks: dict[str, tuple[dict[int, tuple[str, float]], float, tuple[float, float]]] = {}
    result: LoadResult | None = None
    with (
        open(logs / "loadgen.log", "ab") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True) as generator,
    ):
        try:
            assert generator.stdout is not None
            for line in generator.stdout:
                if line.strip() in ("START", "END"):
                    target.started.seen |= tree_idents(server_pid)
                    marks[line.strip()] = (
                        tree_cpu(server_pid),
                        time.monotonic(),
                        machine_busy(),
                    )
                elif line.startswith(RESULT_PREFIX):
                    data = json.loads(line[len(RESULT_PREFIX) :])
                    result = LoadResult(**data)
            generator.wait(timeout=spec.warmup_s + spec.seconds + 120)
        finally:
            if generator.poll() is None:
                generator.kill()
    if result is None or set(marks) != {"START", "END"}:
        raise RuntimeError(f"the load generator failed (exit {generator.returncode})")
    (cpu0, t0, (busy0, all0)), (cpu1, t1, (busy1, all1)) = marks["START"], marks["END"]
    wall = t1 - t0
    row = Row(target.label, target.family, target.settings, result)
    split: dict[str, list[float]] = {}
    for pid, (label, seconds) in cpu1.items():
        split.setdefault(label, []).append((seconds - cpu0.get(pid, (label, 0.0))[1]) / wall)
    row.server_cores = sum(sum(cores) for cores in split.values())
    busiest = sorted(split.items(), key=lambda item: -sum(item[1]))
    row.server_split = {
        label: sorted((c for c in cores if c >= 0.005), reverse=True)
        for label, cores in busiest
        if sum(cores) >= 0.005
    }
    row.client_cores = result.client_cpu_s / result.window_s
    row.machine_cores = (busy1 - busy0) / max(all1 - all0, 1) * (os.cpu_count() or 1)
    return row


def modelyard_infer_body() -> str:
    return json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": SAMPLE}]}
    )
