"""Serving benchmark: one small scikit-learn model behind modelyard, BentoML, Ray Serve and MLflow.

The model: ``LogisticRegression(max_iter=1000)`` fitted on iris (``sklearn.datasets.load_iris``,
4 FP64 features), saved with joblib. One request = predict on one row (5.1, 3.5, 1.4, 0.2). It
is trained once, in ``bench/.venvs/sklearn``, with the same pinned scikit-learn every peer has.

Every target is driven by the same load generator: a separate process (this file run with
``--loadgen``, the modelyard venv's Python) running one asyncio loop (uvloop where installed) with
``--concurrency`` workers (default 32), each with its own keep-alive HTTP/1.1 connection over raw
asyncio streams and a pre-built request, in a closed loop: send, read the whole response, send
again. The workers start one after another over the first half of the warm-up: a server whose
worker processes share one listening socket hands a burst of connections to whichever process
wakes first (MLflow's two uvicorn workers then served nearly everything from one process).
``--warmup`` seconds (default 5) are discarded, then ``--seconds`` (default 20) are measured:
throughput = responses completed inside the window / window; p50 and p99 of the latency of those
responses; errors = non-200 answers, failed connections and timeouts (10 s) inside the window.
The generator and the server share the 2 cores, so the table shows the CPU each used during the
window (cores: CPU seconds / wall seconds; the server's is the sum over its whole process tree,
split by process after the table), and what anything else on the machine used (other sessions'
work). A reference row ``null`` drives a minimal asyncio HTTP server that answers a canned JSON:
the generator's ceiling on this machine. A reference row ``starlette`` drives a bare Starlette app
under uvicorn (httptools, uvloop, no access log; this venv) that decodes the same OIP v2 body and
calls the same ``predict``: the practical ceiling of a Python server for this model, which
modelyard's gateway + replica are compared with.

The targets, each started, measured and stopped before the next (every peer in its own venv,
created under ``bench/.venvs/<peer>`` on first use, minutes, not timed):

- modelyard (this venv): ``python -m modelyard up`` on a temporary home (SQLite, local blobs),
  the model pushed with ``runtime="sklearn"``, one deployment with exactly one replica
  (``min_replicas = max_replicas = 1``); requests are KServe OIP v2 through the gateway with
  ``Authorization: Bearer <admin key>``.
- BentoML: a ``@bentoml.service`` class with one ``@bentoml.api`` ``predict(input_data:
  np.ndarray) -> np.ndarray`` (the layout of BentoML's iris quickstart; the model is loaded with
  joblib in ``__init__``), served with ``bentoml serve``; body ``{"input_data": [[...]]}``.
- Ray Serve: a ``@serve.deployment`` class whose ``async __call__(request)`` reads the JSON body
  ``{"inputs": [[...]]}``, deployed with ``serve.run(..., route_prefix="/predict")`` on a local
  Ray started by the driver (``ray.init()`` defaults), reached through Serve's HTTP proxy.
- MLflow: ``mlflow models serve -m <dir> --env-manager local`` on a model written by
  ``mlflow.sklearn.save_model``; body ``{"inputs": [[...]]}`` to ``/invocations``.

Each peer runs with its defaults (one worker / one replica), and once more with the documented
setting that lets it use both cores (``--peer-workers``, default ``1,2``): BentoML
``@bentoml.service(workers=2)``, Ray ``@serve.deployment(num_replicas=2)``, MLflow
``--workers 2``. The best peer is the peer row with the highest throughput. Logging stays as
each ships it: BentoML, Ray Serve and MLflow (uvicorn) log a line per request; modelyard's gateway
access log is off unless ``up --access-log``.

modelyard's extra figures: the gateway's added latency (the same load straight to the replica's
own URL, with the replica token the gateway sends, at concurrency 1 and ``--concurrency``);
commit-to-serving (a retrained model whose
predictions differ is pushed; from the end of ``push()`` to the first gateway answer whose
``model_version`` is the new version, polled in a tight loop); the first answer from zero (a
second deployment that scales to zero; once it has no replica by every account (the API lists
none, no replica state file under the home's ``replicas/`` is its revision's, and every process
that ever served it is gone from /proc), one request through the gateway is timed; then, at zero
again, once more with the platform's launcher killed first, so that the replica waits for a fresh
launcher and its imports: cold start with the launcher warm and cold).

Goals: modelyard's throughput >= 1.5x the best peer's at an equal or lower p99, and >= 0.7x the
bare Starlette app's; the gateway adds <= 1 ms at p50; commit-to-serving <= 3 s; first answer
from zero, launcher warm, <= 1.5 s.

Run it (about 6 minutes with the defaults on 2 cores, once the venvs exist; creating them takes
a few minutes more, once)::

    make bench BENCH=serving                  # = .venv/bin/python bench/serving.py
    .venv/bin/python bench/serving.py --seconds 5 --peers modelyard,mlflow --peer-workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TypeVar

from _harness import (
    REQUEST_FAILURES,
    UP,
    VENVS,
    Ident,
    alive,
    argument_parser,
    children_map,
    ensure_venv,
    free_port,
    goal,
    ident,
    launch,
    load_average,
    machine_busy,
    machine_line,
    percentile,
    platform_env,
    process_label,
    signal_each,
    stop_tree,
    tree_cpu,
    tree_idents,
    venv_version,
    wait_until,
)

SKLEARN = ("scikit-learn==1.9.1", "joblib==1.6.0")
# What pip installs in each venv. The package index this machine reaches lags PyPI: BentoML
# 1.4.40 asks for a certifi it does not hold yet, and MLflow 3.18.0's mlflow-skinny is missing.
REQUIREMENTS = {
    "sklearn": SKLEARN,
    "bentoml": ("bentoml==1.4.39", *SKLEARN),
    "ray": ("ray[serve]==2.60.0", *SKLEARN),
    "mlflow": ("mlflow==3.17.2", *SKLEARN),
}
DISTRIBUTION = {"bentoml": "bentoml", "ray": "ray", "mlflow": "mlflow", "sklearn": "scikit-learn"}
FAMILIES = ("null", "starlette", "modelyard", "bentoml", "ray", "mlflow")
PEERS = ("bentoml", "ray", "mlflow")
SAMPLE = [5.1, 3.5, 1.4, 0.2]
NAMESPACE = "bench"
RESULT_PREFIX = "BENCH-JSON "
REQUEST_TIMEOUT_S = 10.0
START_TIMEOUT_S = 240.0
STOP_GRACE_S = 20.0
THROUGHPUT_GOAL = 1.5
GATEWAY_P50_GOAL_MS = 1.0
COMMIT_GOAL_S = 3.0
FROM_ZERO_GOAL_S = 1.5
CEILING_GOAL = 0.7
T = TypeVar("T")

TRAIN = """\
import sys
from pathlib import Path

import joblib
import sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

out, shift = Path(sys.argv[1]), int(sys.argv[2])
features, labels = load_iris(return_X_y=True)
# shift > 0 relabels the classes (0 -> 1, 1 -> 2, 2 -> 0): a model whose answers differ
model = LogisticRegression(max_iter=1000).fit(features, (labels + shift) % 3)
out.mkdir(parents=True)
joblib.dump(model, out / "model.joblib")
print(sklearn.__version__, model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist())
"""

MLFLOW_SAVE = """\
import sys

import joblib
import mlflow.sklearn

mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2])
"""

BENTO_SERVICE = """\
import os

import bentoml
import joblib
import numpy as np


{decorator}
class Iris:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["IRIS_MODEL"])

    @bentoml.api
    def predict(self, input_data: np.ndarray) -> np.ndarray:
        return self.model.predict(input_data)
"""

RAY_DRIVER = """\
import signal
import sys
import threading

import joblib
import numpy as np
import ray
from ray import serve
from starlette.requests import Request

model_path, port, replicas = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = {} if replicas == 1 else {"num_replicas": replicas}


@serve.deployment(**options)
class Iris:
    def __init__(self, path: str) -> None:
        self.model = joblib.load(path)

    async def __call__(self, request: Request) -> dict:
        payload = await request.json()
        rows = np.asarray(payload["inputs"], dtype=np.float64)
        return {"predictions": self.model.predict(rows).tolist()}


stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
ray.init()
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(Iris.bind(model_path), route_prefix="/predict")
print("READY", flush=True)
stop.wait()
serve.shutdown()
ray.shutdown()
"""


STARLETTE_APP = """\
import sys

import joblib
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

model = joblib.load(sys.argv[1])


async def infer(request: Request) -> JSONResponse:
    tensor = (await request.json())["inputs"][0]
    rows = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
    predictions = model.predict(rows)
    output = {"name": "predict", "datatype": "INT64", "shape": list(predictions.shape),
              "data": predictions.tolist()}
    return JSONResponse({"model_name": "iris", "outputs": [output]})


async def health(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


routes = [Route("/v2/models/iris/infer", infer, methods=["POST"]), Route("/health", health)]
uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning", access_log=False)
"""


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


class Processes:
    """Every server this benchmark starts, each in a session (process group) of its own; stopping
    one reaches whatever it forked, even processes that left its group or lost their parent."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[Started] = []
        self.count = 0

    def start(
        self, name: str, command: Sequence[str], env: dict[str, str], cwd: Path | None = None
    ) -> Started:
        self.count += 1
        log_path = self.logs / f"{self.count:02d}-{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 (closed by stop())
        process = launch(command, env, log, cwd)
        started = Started(name, process, log_path, log)
        self.running.append(started)
        return started

    def stop(self, started: Started) -> None:
        """SIGTERM to the server's main process, which stops its own children; whatever of its
        tree is still there once it exited (or after a grace) gets SIGTERM, then SIGKILL."""
        stop_tree(started.process, started.name, STOP_GRACE_S, started.seen)
        started.log.close()
        self.running.remove(started)

    def stop_all(self) -> None:
        for started in reversed(self.running[:]):
            try:
                self.stop(started)
            except Exception as exc:  # keep stopping the others
                print(f"warning: stopping {started.name} failed: {exc!r}", flush=True)


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


def replica_token(api_port: int, auth: dict[str, str], deployment: str) -> str:
    """The token a replica of ``deployment`` requires of its callers, from the routing table the
    control plane hands its gateway (an admin key may read it): the straight runs call the
    replica as the gateway does."""
    body = json.dumps({"since": 0, "wait": 0})
    status, answer = http_call(api_port, "POST", "/api/v1/gateway/sync", body, auth, 10.0)
    if status != 200:
        raise RuntimeError(f"gateway sync answered {status}: {answer[:200]!r}")
    table = json.loads(answer)["table"]
    token: str = table["deployments"][f"{NAMESPACE}/{deployment}"]["revisions"][0]["token"]
    return token


def http_ok(port: int, path: str) -> Callable[[], bool]:
    return lambda: http_call(port, "GET", path, timeout=2.0)[0] == 200


# venvs and the model ---------------------------------------------------------------------------
@dataclass
class Models:
    first: Path  # folder with model.joblib
    retrained: Path  # folder with model.joblib whose predictions differ
    sklearn: str
    answers: tuple[list[int], list[int]]  # each one's prediction for SAMPLE


def train_models(work: Path) -> Models:
    python = ensure_venv("sklearn", REQUIREMENTS["sklearn"])[0]
    script = work / "train.py"
    script.write_text(TRAIN)
    outputs = []
    for shift, folder in ((0, work / "model-v1"), (1, work / "model-v2")):
        done = subprocess.run(
            [str(python), str(script), str(folder), str(shift)],
            check=True,
            capture_output=True,
            text=True,
        )
        outputs.append(done.stdout.split(maxsplit=1))
    return Models(
        work / "model-v1",
        work / "model-v2",
        outputs[0][0],
        (json.loads(outputs[0][1]), json.loads(outputs[1][1])),
    )


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
    command = [sys.executable, str(Path(__file__).resolve()), "--loadgen", json.dumps(asdict(spec))]
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


def worker_label(family: str, workers: int) -> str:
    setting = {"bentoml": "workers", "ray": "num_replicas", "mlflow": "--workers"}[family]
    return f"{setting}={workers}" + (" (default)" if workers == 1 else "")


def start_null(procs: Processes, work: Path) -> Target:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--null-server", str(port)]
    started = procs.start("null", command, dict(os.environ))
    wait_until("null server", http_ok(port, "/"), 30, started)
    return Target("null", "ref: null server", "asyncio, canned answer", port, "/", "{}", started)


def peer_env(name: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env["PATH"] = f"{VENVS / name / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def start_bentoml(procs: Processes, work: Path, models: Models, workers: int) -> Target:
    ensure_venv("bentoml", REQUIREMENTS["bentoml"])[0]
    folder = work / f"bentoml-{workers}"
    folder.mkdir()
    decorator = "@bentoml.service" if workers == 1 else f"@bentoml.service(workers={workers})"
    (folder / "service.py").write_text(BENTO_SERVICE.format(decorator=decorator))
    port = free_port()
    env = peer_env(
        "bentoml",
        BENTOML_HOME=str(work / "bentoml-home"),
        BENTOML_DO_NOT_TRACK="true",
        IRIS_MODEL=str(models.first / "model.joblib"),
    )
    command = [
        str(VENVS / "bentoml" / "bin" / "bentoml"),
        "serve",
        "service:Iris",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    started = procs.start("bentoml", command, env, cwd=folder)
    wait_until("BentoML /readyz", http_ok(port, "/readyz"), START_TIMEOUT_S, started)
    body = json.dumps({"input_data": [SAMPLE]})
    label = f"bentoml {venv_version('bentoml', DISTRIBUTION['bentoml'])}"
    return Target(
        "bentoml", label, worker_label("bentoml", workers), port, "/predict", body, started
    )


def start_ray(procs: Processes, work: Path, models: Models, replicas: int) -> Target:
    python = ensure_venv("ray", REQUIREMENTS["ray"])[0]
    folder = work / f"ray-{replicas}"
    folder.mkdir()
    (folder / "driver.py").write_text(RAY_DRIVER)
    port = free_port()
    env = peer_env("ray", RAY_USAGE_STATS_ENABLED="0")
    command = [
        str(python),
        "driver.py",
        str(models.first / "model.joblib"),
        str(port),
        str(replicas),
    ]
    started = procs.start("ray", command, env, cwd=folder)

    def routed() -> bool:
        status, body = http_call(port, "GET", "/-/routes", timeout=2.0)
        return status == 200 and "/predict" in json.loads(body)

    wait_until("Ray Serve route /predict", routed, START_TIMEOUT_S, started)
    body = json.dumps({"inputs": [SAMPLE]})
    label = f"ray serve {venv_version('ray', DISTRIBUTION['ray'])}"
    return Target("ray", label, worker_label("ray", replicas), port, "/predict", body, started)


def start_mlflow(procs: Processes, work: Path, models: Models, workers: int) -> Target:
    python = ensure_venv("mlflow", REQUIREMENTS["mlflow"])[0]
    model_dir = work / "mlflow-model"
    if not model_dir.exists():
        script = work / "mlflow_save.py"
        script.write_text(MLFLOW_SAVE)
        subprocess.run(
            [str(python), str(script), str(models.first / "model.joblib"), str(model_dir)],
            check=True,
            capture_output=True,
            env=peer_env("mlflow", MLFLOW_TRACKING_URI=f"file://{work / 'mlruns'}"),
        )
    port = free_port()
    command = [
        str(VENVS / "mlflow" / "bin" / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model_dir),
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    if workers != 1:
        command += ["--workers", str(workers)]
    started = procs.start("mlflow", command, peer_env("mlflow"), cwd=work)
    wait_until("MLflow /ping", http_ok(port, "/ping"), START_TIMEOUT_S, started)
    body = json.dumps({"inputs": [SAMPLE]})
    label = f"mlflow {venv_version('mlflow', DISTRIBUTION['mlflow'])}"
    return Target(
        "mlflow", label, worker_label("mlflow", workers), port, "/invocations", body, started
    )


PEER_STARTERS = {"bentoml": start_bentoml, "ray": start_ray, "mlflow": start_mlflow}


def start_starlette(procs: Processes, work: Path, models: Models) -> Target:
    """The practical ceiling: the same predict on the same OIP v2 body in a bare Starlette app
    under uvicorn (httptools, uvloop, no access log), one process, in this venv."""
    script = work / "starlette_app.py"
    script.write_text(STARLETTE_APP)
    port = free_port()
    command = [sys.executable, str(script), str(models.first / "model.joblib"), str(port)]
    started = procs.start("starlette", command, dict(os.environ), cwd=work)
    wait_until("Starlette /health", http_ok(port, "/health"), START_TIMEOUT_S, started)
    label = f"starlette {metadata.version('starlette')}"
    settings = f"uvicorn {metadata.version('uvicorn')}, bare app"
    path = "/v2/models/iris/infer"
    return Target("starlette", label, settings, port, path, modelyard_infer_body(), started)


def measure(
    procs: Processes,
    logs: Path,
    args: argparse.Namespace,
    family: str,
    label: str,
    start: Callable[[], Target],
) -> Row:
    """Start one target, check one answer, drive it, stop it; a failure becomes a row."""
    target: Target | None = None
    print(f"  {label}: starting ...", flush=True)
    try:
        began = time.monotonic()
        target = start()
        ready_s = time.monotonic() - began
        answer = check_answer(target)
        row = drive(target, target.spec(args.concurrency, args.warmup, args.seconds), logs)
        row.answer = answer
        print(
            f"  {label}: ready in {ready_s:.1f} s, answered {answer.strip()[:120]}; "
            f"{row.result.rps if row.result else 0:.0f} req/s",
            flush=True,
        )
        return row
    except Exception as exc:
        print(f"  {label}: FAILED: {exc}", flush=True)
        return Row(label, family, "", None, failure=str(exc).splitlines()[0])
    finally:
        if target is not None:
            procs.stop(target.started)


# modelyard -------------------------------------------------------------------------------------
@dataclass
class ModelyardFigures:
    rows: list[Row] = field(default_factory=list)  # through the gateway and straight, c=1 and N
    version: str = ""
    notes: list[str] = field(default_factory=list)
    commit_s: float | None = None
    commit_polls: int = 0
    commit_detail: str = ""
    zero_s: float | None = None  # the launcher warm
    zero_detail: str = ""
    zero_cold_s: float | None = None  # the launcher killed first
    zero_cold_detail: str = ""
    failure: str = ""


def modelyard_infer_body() -> str:
    return json.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": SAMPLE}]}
    )


def deployment_replicas(deployment: Any) -> list[Any]:
    return [replica for revision in deployment.revisions for replica in revision.replicas]


def bench_modelyard(
    procs: Processes, work: Path, logs: Path, args: argparse.Namespace, models: Models
) -> ModelyardFigures:
    from modelyard.client import Client
    from modelyard.registry.versions import VersionSpec

    figures = ModelyardFigures(version=metadata.version("modelyard"))
    home = work / "modelyard-home"
    started = platform_env(home)
    api_port, gateway_port, env = started.api_port, started.gateway_port, started.env
    print(f"  modelyard {figures.version}: starting ...", flush=True)
    platform_proc = procs.start("modelyard", UP, env)
    try:
        wait_until("modelyard API health", http_ok(api_port, "/api/v1/health"), 120, platform_proc)
        key_path = home / "admin.key"
        wait_until(
            "admin.key",
            lambda: key_path.exists() and bool(key_path.read_text().strip()),
            30,
            platform_proc,
        )
        key = key_path.read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        with Client(url=f"http://127.0.0.1:{api_port}", api_key=key) as client:
            client.create_namespace(NAMESPACE)
            version_spec = VersionSpec(runtime="sklearn")
            began = time.monotonic()
            first = client.push(f"{NAMESPACE}/iris", models.first, version_spec)
            client.create_deployment(
                NAMESPACE,
                "iris",
                model="iris@latest",
                autoscaling={"min_replicas": 1, "max_replicas": 1},
            )

            def ready() -> bool:
                return bool(client.get_deployment(NAMESPACE, "iris").ready)

            wait_until("deployment bench/iris ready", ready, 180, platform_proc)
            deployed_s = time.monotonic() - began
            deployment = client.get_deployment(NAMESPACE, "iris")
            replicas = deployment_replicas(deployment)
            figures.notes.append(
                f"push + create_deployment -> ready: {deployed_s:.2f} s (version {first.number}, "
                f"{len(replicas)} replica(s))"
            )
            gateway = Target(
                "modelyard",
                f"modelyard {figures.version}",
                "gateway + 1 replica",
                gateway_port,
                f"/{NAMESPACE}/iris/v2/models/iris/infer",
                modelyard_infer_body(),
                platform_proc,
                auth,
            )
            answer = check_answer(gateway)
            figures.notes.append(f"gateway answered: {answer.strip()[:200]}")
            figures.notes.append(
                "in the CPU split, modelyard.launcher is the replica (replicas fork from the "
                "launcher), modelyard the control plane (python -m modelyard up)"
            )
            replica_url = replicas[0].url
            host_port = replica_url.split("://", 1)[1].split("/", 1)[0]
            direct = Target(
                "modelyard",
                "modelyard replica",
                "straight to the replica",
                int(host_port.rsplit(":", 1)[1]),
                "/v2/models/iris/infer",
                modelyard_infer_body(),
                platform_proc,
                {"x-modelyard-replica-token": replica_token(api_port, auth, "iris")},
            )
            check_answer(direct)
            for concurrency in (args.concurrency, 1):
                for target, where in ((gateway, "through the gateway"), (direct, "straight")):
                    spec = target.spec(concurrency, args.warmup, args.seconds)
                    row = drive(target, spec, logs)
                    row.settings = f"{where}, c={concurrency}"
                    row.answer = answer
                    figures.rows.append(row)
                    rps = row.result.rps if row.result else 0
                    print(f"  modelyard {row.settings}: {rps:.0f} req/s", flush=True)
            commit_to_serving(client, figures, gateway, models)
            first_from_zero(client, figures, gateway_port, auth, platform_proc, home)
    except Exception as exc:
        figures.failure = f"{type(exc).__name__}: {exc}"
        print(f"  modelyard: FAILED: {figures.failure}\n{platform_proc.log_tail()}", flush=True)
    finally:
        procs.stop(platform_proc)
    return figures


def commit_to_serving(
    client: Any, figures: ModelyardFigures, gateway: Target, models: Models
) -> None:
    from modelyard.registry.versions import VersionSpec

    pushed = client.push(f"{NAMESPACE}/iris", models.retrained, VersionSpec(runtime="sklearn"))
    pushed_at = time.monotonic()
    wanted = str(pushed.number)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10.0)
    polls = 0
    last = ""
    try:
        while time.monotonic() - pushed_at < 60.0:
            polls += 1
            try:
                status, body = http_call(
                    gateway.port,
                    "POST",
                    gateway.path,
                    gateway.body,
                    gateway.headers,
                    connection=connection,
                )
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10.0)
                continue
            last = f"HTTP {status} {body[:200].decode(errors='replace')}"
            if status == 200 and str(json.loads(body).get("model_version")) == wanted:
                figures.commit_s = time.monotonic() - pushed_at
                break
    finally:
        connection.close()
    figures.commit_polls = polls
    figures.commit_detail = f"version {wanted}; last answer seen: {last}"


def first_from_zero(
    client: Any,
    figures: ModelyardFigures,
    gateway_port: int,
    auth: dict[str, str],
    platform_proc: Started,
    home: Path,
) -> None:
    client.create_deployment(
        NAMESPACE,
        "iris0",
        model="iris@latest",
        autoscaling={
            "scale_to_zero": True,
            "scale_to_zero_grace_s": 2,
            "stable_window_s": 6,
            "min_replicas": 0,
            "max_replicas": 1,
        },
    )
    pids: set[int] = set()  # every replica iris0 had, from the API and the state files

    def served() -> bool:
        deployment = client.get_deployment(NAMESPACE, "iris0")
        pids.update(replica.pid for replica in deployment_replicas(deployment) if replica.pid)
        return any(revision.state == "ready" for revision in deployment.revisions)

    # its first revision starts with a replica (initial_replicas); once that served, wait until
    # the autoscaler has taken every replica away (grace, then the stable window)
    wait_until("deployment bench/iris0 ready", served, 120, platform_proc)
    revisions = {revision.id for revision in client.get_deployment(NAMESPACE, "iris0").revisions}
    path = f"/{NAMESPACE}/iris0/v2/models/iris0/infer"
    for launcher in ("warm", "cold"):
        began = time.monotonic()
        proof = prove_zero(client, home, revisions, pids, platform_proc)
        waited_s = time.monotonic() - began
        if launcher == "cold":
            proof += "; " + kill_launcher(platform_proc)
        began = time.monotonic()
        status, body = http_call(
            gateway_port, "POST", path, modelyard_infer_body(), auth, timeout=60
        )
        seconds = time.monotonic() - began if status == 200 else None
        text = body[:200].decode(errors="replace")
        detail = f"HTTP {status} {text}; at zero after {waited_s:.1f} s: {proof}"
        if launcher == "warm":
            figures.zero_s, figures.zero_detail = seconds, detail
        else:
            figures.zero_cold_s, figures.zero_cold_detail = seconds, detail


def prove_zero(
    client: Any, home: Path, revisions: set[str], pids: set[int], platform_proc: Started
) -> str:
    """Wait until iris0 has no replica by every account: the API lists none, no replica state
    file under ``<home>/replicas`` belongs to its revisions, and every process that ever served it
    is gone (not merely reported gone); what was checked."""
    folder = home / "replicas"

    def gone() -> bool:
        deployment = client.get_deployment(NAMESPACE, "iris0")
        listed = deployment_replicas(deployment)
        pids.update(replica.pid for replica in listed if replica.pid)
        registered = False
        for state_file in folder.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(state_file.read_text())
                if state.get("revision_id") in revisions:
                    registered = True
                    pids.add(int(state["pid"]))
        return not listed and not registered and all(ident(pid) is None for pid in pids)

    wait_until("deployment bench/iris0 at 0 replicas (API, state files, processes)", gone, 120)
    if not pids:
        raise RuntimeError("no pid of an iris0 replica was ever seen: nothing proves zero")
    shown = ", ".join(str(pid) for pid in sorted(pids))
    return f"API lists 0 replicas, no state file in replicas/, pid(s) {shown} gone"


def kill_launcher(platform_proc: Started) -> str:
    """SIGKILL the platform's launcher (the next replica then waits for a fresh one and its
    imports); what was killed."""
    root = platform_proc.process.pid
    launchers = [
        pid
        for pid in children_map().get(root, [])
        if process_label(pid) == "modelyard.launcher" and ident(pid) is not None
    ]
    if not launchers:
        raise RuntimeError("no launcher process under the platform to kill")
    idents = [found for pid in launchers if (found := ident(pid)) is not None]
    signal_each(idents, signal.SIGKILL)
    wait_until("the launcher gone", lambda: not any(alive(p) for p in idents), 10)
    return f"launcher pid(s) {', '.join(str(pid) for pid in launchers)} killed first"


# report ------------------------------------------------------------------------------------------
def print_table(rows: Sequence[Row]) -> None:
    print(
        f"\n{'target':24s} {'settings':30s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'max ms':>8s} {'errors':>7s}  {'server':>6s} {'client':>6s} {'other':>5s} {'gen us':>6s}"
    )
    for row in rows:
        if row.result is None:
            print(f"{row.target:24s} {row.settings:30s} FAILED: {row.failure[:120]}")
            continue
        r = row.result
        lat = r.latencies_ms
        print(
            f"{row.target:24s} {row.settings:30s} {r.rps:8.0f} {lat.get('p50', 0):8.2f} "
            f"{lat.get('p99', 0):8.2f} {lat.get('max', 0):8.1f} {r.error_count:7d}  "
            f"{row.server_cores:6.2f} {row.client_cores:6.2f} {row.other_cores:5.2f} "
            f"{r.client_cpu_s / max(r.ok, 1) * 1e6:6.0f}"
        )
    print(
        "columns: req/s = OK responses in the window / window; p50, p99, max of their latency; "
        "errors = non-200, failed connections, timeouts; server, client, other = CPU cores busy "
        "during the window (server process tree, load generator, anything else on the machine: "
        "other sessions' work shows here); gen us = "
        "the load generator's CPU per OK response, in microseconds"
    )
    for row in rows:
        if row.result and row.result.errors:
            print(f"errors: {row.target} {row.settings}: {row.result.errors}")
        if row.result and row.result.connections > row.result.workers:
            print(
                f"reconnects: {row.target} {row.settings}: {row.result.connections} connections "
                f"opened for {row.result.workers} workers"
            )
    print("server CPU by process, in cores and in CPU microseconds per OK response:")
    for row in rows:
        if row.result and row.result.ok and row.family != "null":
            per = row.result.window_s / row.result.ok * 1e6
            split = ", ".join(
                f"{name} {sum(cores):.2f} ({sum(cores) * per:.0f} us)"
                + (f" = {' + '.join(f'{c:.2f}' for c in cores)}" if len(cores) > 1 else "")
                for name, cores in row.server_split.items()
            )
            print(f"  {row.target} {row.settings}: {split}")


def print_goals(
    mine: Row | None,
    peers: Sequence[Row],
    figures: ModelyardFigures | None,
    ceiling: Row | None = None,
) -> None:
    print()
    if mine and mine.result and ceiling and ceiling.result and ceiling.result.ok:
        ratio = mine.result.rps / ceiling.result.rps
        print(
            f"modelyard through the gateway / bare Starlette ({ceiling.settings}): throughput "
            f"{ratio:.2f}x   " + goal(f">= {CEILING_GOAL:.1f}x", ratio >= CEILING_GOAL)
        )
    measured = [row for row in peers if row.result and row.result.ok]
    if mine and mine.result and measured:
        best = max(measured, key=lambda row: row.result.rps if row.result else 0)
        assert best.result is not None
        ratio = mine.result.rps / best.result.rps
        p99 = mine.result.latencies_ms["p99"] / best.result.latencies_ms["p99"]
        print(
            f"modelyard / best peer ({best.target}, {best.settings}): throughput {ratio:.2f}x, "
            f"p99 {p99:.2f}x   "
            + goal(
                f"throughput >= {THROUGHPUT_GOAL:.1f}x at p99 <= 1.00x",
                ratio >= THROUGHPUT_GOAL and p99 <= 1.0,
            )
        )
    if figures is None:
        return
    by_setting = {row.settings: row for row in figures.rows}
    concurrencies = sorted({int(s.rsplit("c=", 1)[1]) for s in by_setting}, reverse=True)
    for concurrency in concurrencies:
        through = by_setting.get(f"through the gateway, c={concurrency}")
        straight = by_setting.get(f"straight, c={concurrency}")
        if not (through and straight and through.result and straight.result):
            continue
        a, b = through.result.latencies_ms, straight.result.latencies_ms
        added50, added99 = a["p50"] - b["p50"], a["p99"] - b["p99"]
        print(
            f"gateway added latency, c={concurrency:<3d} p50 {added50:+7.2f} ms   p99 "
            f"{added99:+7.2f} ms   "
            + goal(f"p50 <= {GATEWAY_P50_GOAL_MS:.1f} ms", added50 <= GATEWAY_P50_GOAL_MS)
        )
    if figures.commit_s is not None or figures.commit_detail:
        shown = f"{figures.commit_s:.3f} s" if figures.commit_s is not None else "not seen in 60 s"
        passed = figures.commit_s is not None and figures.commit_s <= COMMIT_GOAL_S
        print(
            f"commit-to-serving: {shown} ({figures.commit_polls} polls)   "
            f"{goal(f'<= {COMMIT_GOAL_S:.1f} s', passed)}\n  {figures.commit_detail}"
        )
    if figures.zero_s is not None or figures.zero_detail:
        shown = f"{figures.zero_s:.3f} s" if figures.zero_s is not None else "no answer"
        passed = figures.zero_s is not None and figures.zero_s <= FROM_ZERO_GOAL_S
        print(
            f"first answer from zero, launcher warm: {shown}   "
            f"{goal(f'<= {FROM_ZERO_GOAL_S:.1f} s', passed)}\n  {figures.zero_detail}"
        )
    if figures.zero_cold_s is not None or figures.zero_cold_detail:
        cold = figures.zero_cold_s
        print(
            f"first answer from zero, launcher cold: "
            f"{f'{cold:.3f} s' if cold is not None else 'no answer'}   (no goal: a fresh "
            f"launcher imports the serving stack first)\n  {figures.zero_cold_detail}"
        )


# main -------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds (5)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop workers (32)")
    parser.add_argument(
        "--peers", default=",".join(FAMILIES), help=f"targets to run, of {','.join(FAMILIES)}"
    )
    parser.add_argument(
        "--peer-workers", default="1,2", help="worker/replica counts per peer (1,2)"
    )
    parser.add_argument("--keep-logs", type=Path, help="copy the servers' logs to this folder")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    parser.add_argument("--null-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen or args.null_server:
        return args
    args.peers = [name.strip() for name in args.peers.split(",") if name.strip()]
    if set(args.peers) - set(FAMILIES):
        parser.error(f"--peers takes {','.join(FAMILIES)}")
    args.peer_workers = [int(n) for n in args.peer_workers.split(",") if n.strip()]
    if args.seconds <= 0 or args.warmup < 0 or args.concurrency < 1 or not args.peer_workers:
        parser.error("--seconds > 0, --warmup >= 0, --concurrency >= 1, --peer-workers needed")
    return args


def stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def benchmark(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    started = dt.datetime.now(dt.UTC)
    print(
        f"serving benchmark: predict on one row of iris (LogisticRegression, 4 FP64 features) per "
        f"request; closed loop, {args.concurrency} workers on keep-alive HTTP/1.1 connections "
        f"(started over the first {args.warmup / 2:g} s), {args.warmup:g} s warm-up then "
        f"{args.seconds:g} s measured per row"
    )
    print(f"machine: {machine_line()}; started {started:%Y-%m-%d %H:%M} UTC")
    print(f"load average at start: {load_average()}", flush=True)
    rows: list[Row] = []
    figures: ModelyardFigures | None = None
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-serving-") as temp:
        work = Path(temp)
        logs = work / "logs"
        logs.mkdir()
        procs = Processes(logs)
        try:
            models = train_models(work)
            print(
                f"model: scikit-learn {models.sklearn}; answer for {SAMPLE}: "
                f"{models.answers[0]} (retrained: {models.answers[1]})",
                flush=True,
            )
            for family in args.peers:
                if family == "null":
                    rows.append(
                        measure(
                            procs,
                            logs,
                            args,
                            "null",
                            "ref: null server",
                            lambda: start_null(procs, work),
                        )
                    )
                elif family == "starlette":
                    rows.append(
                        measure(
                            procs,
                            logs,
                            args,
                            "starlette",
                            "ref: bare Starlette",
                            lambda: start_starlette(procs, work, models),
                        )
                    )
                elif family == "modelyard":
                    figures = bench_modelyard(procs, work, logs, args, models)
                    rows.extend(figures.rows)
                    if figures.failure:
                        rows.append(
                            Row(
                                f"modelyard {figures.version}",
                                "modelyard",
                                "",
                                None,
                                failure=figures.failure,
                            )
                        )
                else:
                    for workers in args.peer_workers:
                        starter = PEER_STARTERS[family]
                        rows.append(
                            measure(
                                procs,
                                logs,
                                args,
                                family,
                                f"{family} {worker_label(family, workers)}",
                                functools.partial(starter, procs, work, models, workers),
                            )
                        )
        finally:
            procs.stop_all()
            if args.keep_logs:
                shutil.copytree(logs, args.keep_logs, dirs_exist_ok=True)
        loop = next((row.result.loop for row in rows if row.result), "?")
        print(f"\nload generator: {loop}, one process, {sys.executable}")
        print_table(rows)
        mine = next(
            (r for r in rows if r.settings == f"through the gateway, c={args.concurrency}"), None
        )
        peers = [row for row in rows if row.family in PEERS]
        ceiling = next((row for row in rows if row.family == "starlette"), None)
        print_goals(mine, peers, figures, ceiling)
        if figures:
            for note in figures.notes:
                print(f"note: modelyard: {note}")
        for row in rows:
            if row.family in PEERS and row.answer:
                print(f"note: {row.target} ({row.settings}) answered {row.answer.strip()[:80]}")
    print(f"load average at end: {load_average()}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.loadgen:
        loadgen_main(args.loadgen)
    elif args.null_server:
        null_server_main(args.null_server)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
