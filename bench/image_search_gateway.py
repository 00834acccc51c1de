"""The image-search benchmark's online half: CPU per process, the platform started on a temporary
home, search requests through the gateway (sequential and concurrent) and their latency lines.

Part of ``bench/image_search.py``, which describes the method."""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import subprocess
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _harness import (
    CLOCK_TICKS,
    UP,
    Ident,
    ident,
    launch,
    load_average,
    machine_busy,
    percentile,
    platform_env,
    proc_stat,
    process_label,
    process_tree,
    replica_token,
    stop_tree,
    wait_until,
)
from image_search_quality import Catalog, K

NAMESPACE = "bench"
DEPLOYMENT = "search"
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 3600.0
DEPLOY_TIMEOUT_S = 600.0
STOP_GRACE_S = 30.0


# machine and CPU accounting --------------------------------------------------------------------
def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def process_cpu(pid: int, *, reaped: bool = True) -> float:
    """CPU seconds of a process (plus the children it reaped, when ``reaped``)."""
    fields = proc_stat(pid)
    if fields is None:
        return 0.0
    last = 15 if reaped else 13
    return sum(int(value) for value in fields[11:last]) / CLOCK_TICKS


def busy_processes(seconds: float = 1.0, skip: Sequence[int] = ()) -> list[tuple[str, float]]:
    """The other processes that used CPU over ``seconds``: (label, cores), busiest first."""
    before = {pid: process_cpu(pid, reaped=False) for pid in all_pids()}
    time.sleep(seconds)
    busy: dict[str, float] = {}
    for pid, start in before.items():
        if pid in skip:
            continue
        used = process_cpu(pid, reaped=False) - start
        if used > 0:
            label = process_label(pid)
            busy[label] = busy.get(label, 0.0) + used / seconds
    ranked = sorted(busy.items(), key=lambda item: -item[1])
    return [(label, cores) for label, cores in ranked[:4] if cores >= 0.05]


@dataclass
class CpuMeter:
    """CPU used over a stretch of time: by this process, by a process tree, by the machine."""

    tree_root: int | None = None
    began: float = 0.0
    own: float = 0.0
    tree: float = 0.0
    busy: tuple[int, int] = (0, 0)

    def start(self) -> CpuMeter:
        self.began = time.monotonic()
        self.own = time.process_time()
        self.tree = self._tree_cpu()
        self.busy = machine_busy()
        return self

    def _tree_cpu(self) -> float:
        if self.tree_root is None:
            return 0.0
        return sum(process_cpu(pid) for pid in process_tree(self.tree_root))

    def report(self) -> str:
        wall = max(time.monotonic() - self.began, 1e-9)
        own = (time.process_time() - self.own) / wall
        tree = (self._tree_cpu() - self.tree) / wall
        busy1, total1 = machine_busy()
        cpus = os.cpu_count() or 1
        machine = (busy1 - self.busy[0]) / max(total1 - self.busy[1], 1) * cpus
        other = max(0.0, machine - own - tree)
        platform_part = f", platform processes {tree:.2f}" if self.tree_root is not None else ""
        return (
            f"CPU over {wall:.0f} s, in cores of {cpus}: this benchmark {own:.2f}{platform_part}, "
            f"other processes {other:.2f} (load average now {load_average()})"
        )


# 4. the platform -------------------------------------------------------------------------------
@dataclass
class Platform:
    process: subprocess.Popen[bytes]
    log_path: Path
    home: Path
    api_port: int
    gateway_port: int
    seen: set[Ident] = field(default_factory=set)
    name: str = "modelyard up"

    def note_tree(self) -> None:
        self.seen |= {i for pid in process_tree(self.process.pid) if (i := ident(pid))}

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])

    def stop(self) -> None:
        """SIGTERM to ``up``, which stops its gateway and replicas; whatever of its tree is still
        there after it exited (or after a grace) gets SIGTERM, then SIGKILL."""
        self.note_tree()
        stop_tree(self.process, self.name, STOP_GRACE_S, self.seen)


def start_platform(work: Path) -> Platform:
    home = work / "home"
    home.mkdir()
    started = platform_env(home)
    log_path = work / "platform.log"
    with open(log_path, "wb") as log:
        process = launch(UP, started.env, log)
    return Platform(process, log_path, home, started.api_port, started.gateway_port)


def http_ok(port: int, path: str) -> Callable[[], bool]:
    def check() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        finally:
            conn.close()

    return check


@dataclass
class Request:
    kind: str  # "image" | "id"
    path: str
    body: bytes
    content_type: str
    expect: str  # the photo's name (image) or the item id (id) the top results should hold


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "modelyard-bench-image-search"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="query.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def build_requests(catalog: Catalog, prefix: str) -> tuple[list[Request], list[Request]]:
    """Image queries (photo queries and augmented emoji, alternating) and id queries."""
    from PIL import Image

    from modelyard.apps.image_search import augment

    rng = np.random.default_rng(7)
    emoji = [item for item in catalog.items if item.category != "photo"]
    augmented = []
    for item in emoji[:: max(1, len(emoji) // 40)][:40]:
        with Image.open(item.path) as source:
            image = augment(source.convert("RGBA"), rng)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        augmented.append((buffer.getvalue(), item.id))
    mixed = [q for pair in zip(catalog.queries, augmented, strict=False) for q in pair]
    mixed += catalog.queries[len(augmented) :] + augmented[len(catalog.queries) :]
    images = []
    for data, expect in mixed:
        body, kind = multipart(data)
        images.append(Request("image", f"{prefix}/search?k={K}", body, kind, expect))
    ids = [
        Request(
            "id",
            f"{prefix}/search",
            json.dumps({"id": item.id, "k": K}).encode(),
            "application/json",
            item.id,
        )
        for item in catalog.items
    ]
    random.Random(1).shuffle(ids)
    return images, ids


@dataclass
class Answer:
    latency: float
    status: int
    took_ms: float | None
    hit: bool | None  # top-1 is the expected item (id) / of the expected photo or emoji (image)
    error: str = ""


def send(conn: http.client.HTTPConnection, request: Request, headers: dict[str, str]) -> Answer:
    began = time.perf_counter()
    conn.request(
        "POST",
        request.path,
        body=request.body,
        headers={**headers, "Content-Type": request.content_type},
    )
    response = conn.getresponse()
    body = response.read()
    latency = time.perf_counter() - began
    if response.status != 200:
        return Answer(latency, response.status, None, None, body[:300].decode(errors="replace"))
    answer = json.loads(body)
    results = answer.get("results") or [{}]
    top = results[0]
    expect = request.expect
    if request.kind == "id" or expect.startswith("emoji-"):
        hit = top.get("id") == expect
    else:
        hit = top.get("category") == "photo" and top.get("subcategory") == expect
    return Answer(latency, 200, answer.get("took_ms"), hit)


def sequential(
    port: int, requests: Sequence[Sequence[Request]], count: int, headers: dict[str, str]
) -> dict[str, list[Answer]]:
    """``count`` requests of each list, taking one of each in turn, on one connection."""
    answers: dict[str, list[Answer]] = {r[0].kind: [] for r in requests}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for number in range(count):
            for kind in requests:
                request = kind[number % len(kind)]
                try:
                    answers[request.kind].append(send(conn, request, headers))
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    answers[request.kind].append(Answer(0.0, 0, None, None, repr(exc)))
    finally:
        conn.close()
    return answers


def concurrent(
    port: int, requests: Sequence[Request], count: int, workers: int, headers: dict[str, str]
) -> tuple[list[Answer], float]:
    """``count`` requests spread over ``workers`` threads, each with its own connection."""
    answers: list[Answer] = []
    lock = threading.Lock()
    todo = iter(range(count))

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                with lock:
                    number = next(todo, None)
                if number is None:
                    return
                try:
                    answer = send(conn, requests[number % len(requests)], headers)
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    answer = Answer(0.0, 0, None, None, repr(exc))
                with lock:
                    answers.append(answer)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, time.perf_counter() - began


def latency_line(label: str, answers: Sequence[Answer], wall: float | None = None) -> str:
    good = sorted(a.latency * 1000 for a in answers if a.status == 200)
    errors = Counter(
        f"HTTP {a.status}" if a.status else "connection" for a in answers if a.status != 200
    )
    if not good:
        return f"  {label:42s} no answer: {dict(errors)}"
    took = sorted(a.took_ms for a in answers if a.took_ms is not None)
    hits = [a.hit for a in answers if a.hit is not None]
    rate = f"{len(good) / wall:7.1f}" if wall else f"{len(good) / (sum(good) / 1000):7.1f}"
    line = (
        f"  {label:42s} {len(good):5d} {rate} {percentile(good, 0.5):8.2f} "
        f"{percentile(good, 0.99):8.2f} {good[-1]:8.1f} "
        f"{percentile(took, 0.5) if took else float('nan'):8.2f} "
        f"{sum(hits) / len(hits) if hits else float('nan'):6.3f}"
    )
    if errors:
        first = next(a.error for a in answers if a.status != 200)
        line += f"  errors {dict(errors)}: {first[:160]}"
    return line


def bench_gateway(work: Path, catalog: Catalog, args: argparse.Namespace) -> list[str]:
    """Part 4; returns notes on failures (also printed)."""
    from modelyard.apps.image_search import ATTRIBUTION, write_catalog
    from modelyard.apps.image_search.pipeline import image_index
    from modelyard.client import Client

    problems: list[str] = []
    platform_ = start_platform(work)
    meter: CpuMeter | None = None
    stage = "starting the platform"
    try:
        wait_until(
            "API health", http_ok(platform_.api_port, "/api/v1/health"), START_TIMEOUT_S, platform_
        )
        key_path = platform_.home / "admin.key"
        wait_until(
            "admin.key",
            lambda: bool(key_path.exists() and key_path.read_text().strip()),
            30,
            platform_,
        )
        key = key_path.read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        folder = write_catalog(catalog.items, work / "catalog", attribution=ATTRIBUTION)
        meter = CpuMeter(platform_.process.pid).start()
        url = f"http://127.0.0.1:{platform_.api_port}"
        with Client(url=url, api_key=key, cache_dir=work / "client-cache", timeout=120) as client:
            stage = "pushing the catalog"
            client.create_namespace(NAMESPACE)
            began = time.monotonic()
            dataset = client.push(f"{NAMESPACE}/catalog", folder, kind="dataset")
            pushed_s = time.monotonic() - began
            stage = "register_pipeline(image_index(...))"
            client.register_pipeline(NAMESPACE, image_index(f"{NAMESPACE}/image-index"))
            stage = "running the pipeline"
            params = {"catalog": f"{NAMESPACE}/catalog@latest", "cache": str(work / "emb")}
            began = time.monotonic()
            run = client.run_pipeline(NAMESPACE, "image-index", params)
            run = client.wait_run(NAMESPACE, run.id, timeout=RUN_TIMEOUT_S)
            run_s = time.monotonic() - began
            logs = list(client.run_logs(NAMESPACE, run.id))
            print(
                f"  dataset {NAMESPACE}/catalog v{dataset.number} ({len(catalog.items)} images, "
                f"{dataset.size_bytes / 1e6:.1f} MB) pushed in {pushed_s:.1f} s; pipeline run "
                f"{run.state} in {run_s:.1f} s",
                flush=True,
            )
            for step in run.steps:
                took = (
                    f"{(step.finished_at - step.started_at).total_seconds():.1f} s"
                    if step.started_at and step.finished_at
                    else "?"
                )
                print(f"    step {step.node}: {step.state} in {took}")
            for line in logs:
                if "recall@10" in line or line.startswith("skipped") or "Error" in line:
                    print(f"    log: {line.strip()[:200]}")
            if run.state != "succeeded":
                raise RuntimeError(
                    f"pipeline run {run.id} {run.state}: {run.reason}; last log lines: "
                    + " | ".join(line.strip() for line in logs[-8:])
                )
            stage = "deploying the index"
            latest = client.get_version(f"{NAMESPACE}/image-index@latest")
            began = time.monotonic()
            client.create_deployment(NAMESPACE, DEPLOYMENT, "image-index@latest", timeout_s=120)
            deployment = client.wait_deployment(
                NAMESPACE, DEPLOYMENT, version=latest.number, timeout=DEPLOY_TIMEOUT_S
            )
            deploy_s = time.monotonic() - began
            platform_.note_tree()
            replicas = [
                r for rev in deployment.revisions for r in rev.replicas if r.state == "ready"
            ]
            print(
                f"  model {NAMESPACE}/image-index v{latest.number} deployed in {deploy_s:.1f} s "
                f"({len(replicas)} ready replica(s)); {meter.report()}",
                flush=True,
            )
        stage = "sending requests"
        prefix = f"/{NAMESPACE}/{DEPLOYMENT}"
        images, ids = build_requests(catalog, prefix)
        targets = [("gateway", platform_.gateway_port, prefix, headers)]
        if replicas:
            host_port = replicas[0].url.split("://", 1)[1].split("/", 1)[0]
            token = replica_token(platform_.api_port, headers, f"{NAMESPACE}/{DEPLOYMENT}")
            straight = {**headers, "x-modelyard-replica-token": token}
            port = int(host_port.rsplit(":", 1)[1])
            targets.append(("straight to the replica", port, "", straight))
        meter = CpuMeter(platform_.process.pid).start()
        print(
            f"\n  {'':42s} {'OK':>5s} {'req/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} "
            f"{'took ms':>8s} {'top-1':>6s}"
        )
        for label, port, base, sent in targets:
            image_requests = [with_prefix(r, prefix, base) for r in images]
            id_requests = [with_prefix(r, prefix, base) for r in ids]
            sequential(port, [image_requests, id_requests], args.warmup_requests, sent)
            count = args.requests if label == "gateway" else max(1, args.requests // 2)
            answers = sequential(port, [image_requests, id_requests], count, sent)
            print(latency_line(f"image query, {label}, c=1", answers["image"]), flush=True)
            print(latency_line(f"id query, {label}, c=1", answers["id"]), flush=True)
            for kind, kind_answers in answers.items():
                if any(a.status != 200 for a in kind_answers):
                    problems.append(f"{kind} queries ({label}) had errors")
        if args.concurrency > 0:
            port = platform_.gateway_port
            for kind, requests in (("image", images), ("id", ids)):
                together, wall = concurrent(
                    port, requests, args.requests, args.concurrency, headers
                )
                label = f"{kind} query, gateway, c={args.concurrency}"
                print(latency_line(label, together, wall), flush=True)
                if any(a.status != 200 for a in together):
                    problems.append(f"{kind} queries (gateway, c={args.concurrency}) had errors")
        print(
            "  columns: OK answers; req/s (c=1: 1 / mean latency; c>1: answers / wall time); p50, "
            "p99, max of the client's latency; took ms: p50 of the time the runtime reports for "
            "itself; top-1: share whose first result is the query's item (id), its photo's "
            "group (photo queries) or its emoji (augmented emoji)"
        )
        print(f"  {meter.report()}")
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        problem = (
            f"gateway part failed while {stage}: {type(exc).__name__}: {exc} "
            f"(raised at {where.filename}:{where.lineno})"
        )
        problems.append(problem.splitlines()[0])
        print(f"  FAILED: {problem}\n  platform log tail:\n{platform_.log_tail()}", flush=True)
    finally:
        platform_.stop()
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            (args.keep_logs / "platform.log").write_bytes(platform_.log_path.read_bytes())
    return problems


def with_prefix(request: Request, prefix: str, base: str) -> Request:
    if prefix == base:
        return request
    return Request(
        request.kind,
        base + request.path[len(prefix) :],
        request.body,
        request.content_type,
        request.expect,
    )
