"""Rollout benchmark: a judged canary catches a bad version at its first step, passes a better one,
and what clients saw meanwhile.

Three new versions of a small ``python`` runtime model (``model.py`` sleeps ``--delay-ms`` per
call, default 4 ms, and returns the sum of its inputs):

- error regression: the new version fails every ``round(1 / --error-rate)``-th call of its
  replica (default 1 in 20 = 5%; a counter, not a coin, so the rate is exact);
- latency regression: the new version sleeps ``--slowdown`` times longer (default 3x = 12 ms);
- faster: the new version sleeps ``--speedup`` times as long (default 0.5x = 2 ms), fails
  nothing: a better version, which must never be rolled back.

Each run uses ``python -m modelyard up`` on a temporary home (SQLite, local blobs), started once
for the whole benchmark, and a fresh deployment per run with exactly one replica per revision
(``min_replicas = max_replicas = 1``): push the good version, deploy it, set the strategy, start
the load, ``--warmup`` seconds (default 3), then ``push`` the new version. The push trigger makes
the new revision by itself; nothing else is called until the run ends.

The load: closed-loop clients in one asyncio loop in a thread of this process, each on its own
keep-alive HTTP/1.1 connection to the gateway, sending OIP v2 inference and reading the whole
answer before sending again; every scenario runs once per count in ``--workers`` (default 8 and
32). Every answer is kept with its send and completion times (wall clock, the clock the control
plane stamps rollouts with, same machine), its status and the ``x-modelyard-revision`` header. A
failed request is any answer other than 200, a failed connection or a timeout (10 s). With 8 or
more clients the one stable replica, taking 90% of the traffic at the first step, queues (clients
saw 33 ms p50 for 4 ms of work with 8) while the canary's does not: the judge compares the
replicas' own service times (``x-modelyard-service-ms``), not the gateway's end-to-end times,
and each recorded analysis shows both.

Strategy ``canary`` (``--steps``, default 10,50,100; ``--min-requests`` per revision and step,
default 100, the platform's default; ``--min-step-seconds`` 10; ``--max-step-seconds`` 120;
``--max-error-rate-increase`` 0.01 and ``--latency-tolerance`` 0.2, the platform's defaults).
Printed per run, from the rollout's own timestamps (``started_at``: the transaction that marked
the canary ready and split the traffic; ``finished_at``: the rollback or the promotion) and the
client's records:

- the outcome and the step it came at: ``rolled_back at step 1 (10%)``, ``promoted after step 2
  (50%)`` (the last step before 100%);
- commit -> canary: from the end of ``push()`` (the version committed) to the rollout's start;
- canary -> end: the rollout's start to its rollback or promotion (detection, judge and write);
- commit -> end: the two together;
- gateway: from the rollback to the last answer the canary gave (the gateway learns the new
  table by its long poll; negative: the canary answered nothing after the rollback was written);
- the window: from ``started_at`` to the end, or to the canary's last answer after a rollback,
  whichever is later; the client requests that completed in it, how many failed, their share, and
  the ceiling = the canary's weight at the step it reached x the bad version's error rate; client
  p50/p99 of the answers in the window (200s only).

Strategy ``replace`` is the baseline for the two regressions (the platform's default; Flagger
and Argo Rollouts, the peers with judged canaries, need Kubernetes and cannot run here): the same
push, the new revision takes all the traffic once ready. Its window starts at the new revision's
``ready_at`` (the transaction that moved the traffic to it) and lasts as long as the same run's
canary window; printed: commit -> ready, ready -> the first request the new version answered,
the requests, failures, share and p50/p99 in the window, and the ratio failed with replace /
failed with canary. The canary run of each index goes first, then its replace run, then the next
index (``--runs``, default 5; ``--no-replace`` skips the baseline); the medians follow the runs.

Goals, printed as a verdict line per scenario and client count: the error regression rolled
back by itself in every run, with a failed share during the canary at most its weight x the
error rate; the latency regression rolled back at the first step in every run; the faster
version promoted, never rolled back, in every run (no false rollbacks). Times are printed, not
judged.

Run it (about 15 minutes with the defaults on 2 cores)::

    make bench BENCH=rollout                    # = .venv/bin/python bench/rollout.py
    .venv/bin/python bench/rollout.py --runs 1 --workers 8 --scenarios latency,faster
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from _harness import (
    REQUEST_FAILURES,
    UP,
    argument_parser,
    launch,
    load_average,
    machine_busy,
    machine_line,
    percentile,
    platform_env,
    verdict,
    wait_until,
)

NAMESPACE = "bench"
REQUEST_TIMEOUT_S = 10.0
ROLLOUT_TIMEOUT_S = 300.0
POLL_S = 0.1
SCENARIOS = ("error", "latency", "faster")
ROLLED_BACK, FIRST_STEP, PROMOTED = "rolled back", "rolled back at the first step", "promoted"
"""What each scenario's new version must come to, in every run."""

MODEL = """\
import itertools
import time

calls = itertools.count(1)


def predict(inputs):
    time.sleep({delay})
    if {fail_every} and next(calls) % {fail_every} == 0:
        raise RuntimeError("this version fails one call in {fail_every}")
    return {{"total": inputs["x"].sum(axis=1)}}
"""


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


# the platform ------------------------------------------------------------------------------------
class Platform:
    """``python -m modelyard up`` on a throw-away home, in a session of its own."""

    def __init__(self, home: Path) -> None:
        self.home = home
        started = platform_env(home)
        self.api_port, self.gateway_port, self.env = (
            started.api_port,
            started.gateway_port,
            started.env,
        )
        self.log_path = home.parent / "modelyard-up.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        import httpx

        with open(self.log_path, "wb") as log:
            self.process = launch(UP, self.env, log)

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"modelyard up exited:\n{self.log_tail()}")
            try:
                return httpx.get(f"http://127.0.0.1:{self.api_port}/api/v1/health").is_success
            except httpx.TransportError:
                return False

        wait_until("modelyard API health", healthy, 120)
        key = self.home / "admin.key"
        wait_until("admin.key", lambda: key.exists() and bool(key.read_text().strip()), 30)
        return key.read_text().strip()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])

    def own_pids(self) -> set[int]:
        """The replicas (their state files) and any process whose command line names this home
        (the gateway); all of them started by this benchmark's platform."""
        pids = set()
        for state in self.home.glob("replicas/*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                pids.add(int(json.loads(state.read_text())["pid"]))
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                if str(self.home).encode() in cmdline.read_bytes():
                    pids.add(int(cmdline.parent.name))
        return pids - {os.getpid()}

    def stop(self) -> None:
        if self.process is None:
            return
        left = self.own_pids()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        for pid in left | self.own_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def write_model(folder: Path, delay_ms: float, fail_every: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(MODEL.format(delay=delay_ms / 1000, fail_every=fail_every))
    return folder


def as_epoch(moment: dt.datetime) -> float:
    if moment.tzinfo is None:  # stored without a zone: the control plane writes UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


class Busy:
    """Cores busy on the whole machine (every process, other sessions' too) over a block."""

    def __enter__(self) -> Busy:
        self.began = machine_busy()
        self.loadavg = load_average()
        return self

    def __exit__(self, *exc: object) -> None:
        busy1, all1 = machine_busy()
        cores = (busy1 - self.began[0]) / max(all1 - self.began[1], 1) * (os.cpu_count() or 1)
        self.text = f"load {self.loadavg} at start, {cores:.2f} cores busy"


# one run -----------------------------------------------------------------------------------------
class Bench:
    def __init__(self, client: Any, platform: Platform, args: argparse.Namespace, work: Path):
        self.client = client
        self.platform = platform
        self.args = args
        self.work = work
        self.token = client.api_key or ""

    def deploy(self, name: str, scenario: Scenario, strategy: dict[str, Any]) -> str:
        """Push the good version, deploy it, set the strategy; the stable revision's name."""
        from modelyard.registry.versions import VersionSpec

        good = write_model(self.work / name / "good", **scenario.good)
        self.client.push(f"{NAMESPACE}/{name}", good, VersionSpec(runtime="python"))
        self.client.create_deployment(
            NAMESPACE, name, f"{name}@latest", autoscaling={"min_replicas": 1, "max_replicas": 1}
        )
        self.client.set_strategy(NAMESPACE, name, **strategy)
        info = self.client.wait_deployment(NAMESPACE, name, timeout=120)
        return str(info.revisions[0].name)

    def push_bad(self, name: str, scenario: Scenario) -> tuple[float, float]:
        """Push the bad version; (seconds push() took, time.time() when it returned)."""
        from modelyard.registry.versions import VersionSpec

        bad = write_model(self.work / name / "bad", **scenario.bad)
        began = time.time()
        self.client.push(f"{NAMESPACE}/{name}", bad, VersionSpec(runtime="python"))
        committed = time.time()
        return committed - began, committed

    def load(self, name: str, workers: int) -> Load:
        path = f"/{NAMESPACE}/{name}/v2/models/{name}/infer"
        return Load(self.platform.gateway_port, path, self.token, workers)

    def remove(self, name: str) -> None:
        """Delete the deployment and wait until its replicas are gone (they share the cores)."""
        info = self.client.get_deployment(NAMESPACE, name)
        pids = [p.pid for r in info.revisions for p in r.replicas if p.pid]
        self.client.delete_deployment(NAMESPACE, name)
        with contextlib.suppress(TimeoutError):
            wait_until("replicas stopped", lambda: not any(map(pid_alive, pids)), 30)

    def canary(self, scenario: Scenario, index: int) -> CanaryRun:
        args = self.args
        run = CanaryRun(index)
        name = f"{scenario.name}-w{scenario.workers}-canary-{index}"
        strategy = {
            "strategy": "canary",
            "steps": args.steps,
            "min_step_seconds": args.min_step_seconds,
            "max_step_seconds": args.max_step_seconds,
            "analysis": {
                "min_requests": args.min_requests,
                "max_error_rate_increase": args.max_error_rate_increase,
                "latency_tolerance": args.latency_tolerance,
            },
        }
        self.deploy(name, scenario, strategy)
        try:
            with Busy() as busy, self.load(name, scenario.workers) as load:
                time.sleep(args.warmup)
                warm_end = time.time()
                run.push_s, committed = self.push_bad(name, scenario)
                info = self.await_rollout(name)
                if info is not None and info.state in ("running", "paused"):
                    self.client.rollout_action(NAMESPACE, name, "rollback")
                    run.outcome = (
                        f"{info.state} after {ROLLOUT_TIMEOUT_S:.0f} s, rolled back by hand"
                    )
                    info = self.client.rollouts(NAMESPACE, name)[0]
                elif info is not None:
                    run.outcome = info.state
                finished = time.time()
                if info is not None and info.finished_at is not None:
                    finished = as_epoch(info.finished_at)
                # the gateway learns the rollback by its long poll: keep the load past it
                time.sleep(max(0.0, finished + args.tail - time.time()))
            answers = load.answers
            run.warmup = Window.of(answers, answers[0].done if answers else 0.0, warm_end)
            run.load = busy.text + _client_errors(load)
            if info is None:
                run.outcome = "no rollout started"
                return run
            started = as_epoch(info.started_at)
            run.commit_to_start_s = started - committed
            run.canary_to_end_s = finished - started
            run.commit_to_end_s = finished - committed
            run.step = info.step
            run.weight = info.steps[info.step]
            run.reason = info.reason or ""
            run.steps = [step_text(analysis) for analysis in info.analyses]
            if info.analyses:
                evidence = info.analyses[-1].get("evidence", {})
                run.evidence = ", ".join(
                    f"{side} {evidence[side]['requests']} req {evidence[side]['errors']} err"
                    for side in ("stable", "canary")
                    if side in evidence
                )
            revisions = self.client.get_deployment(NAMESPACE, name).revisions
            canary = next(r.name for r in revisions if r.number == info.canary)
            served = [a for a in answers if a.revision == canary]
            # The window: the rollout's life as the control plane wrote it (started_at is the
            # transaction that marked the canary ready and split the traffic), stretched to the
            # last answer the canary gave (the gateway learns the rollback by its long poll).
            end = finished
            if served and info.state != "promoted":  # promoted, it goes on answering
                last = max(a.done for a in served)
                run.gateway_s = last - finished
                end = max(end, last)
            run.window = Window.of(answers, started, end)
            run.canary_requests = run.window.by_revision.get(canary, (0, 0))[0]
            return run
        finally:
            self.remove(name)

    def await_rollout(self, name: str) -> Any:
        """The rollout once it ended (or the last seen after the timeout); None if none began."""
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
        latest = None
        while time.monotonic() < deadline:
            found = self.client.rollouts(NAMESPACE, name)
            if found:
                latest = found[0]
                if latest.state not in ("running", "paused"):
                    return latest
            time.sleep(POLL_S)
        return latest

    def replace(self, scenario: Scenario, index: int, window_s: float) -> ReplaceRun:
        args = self.args
        run = ReplaceRun(index)
        name = f"{scenario.name}-w{scenario.workers}-replace-{index}"
        stable = self.deploy(name, scenario, {"strategy": "replace"})
        try:
            with Busy() as busy, self.load(name, scenario.workers) as load:
                time.sleep(args.warmup)
                warm_end = time.time()
                since = len(load.answers)
                run.push_s, committed = self.push_bad(name, scenario)
                deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
                first = load.first(since, other=stable)
                while first < 0 and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                    first = load.first(since, other=stable)
                if first >= 0:  # the window starts before this answer: keep the load past it
                    time.sleep(max(0.0, load.answers[first].sent + window_s + 0.5 - time.time()))
            answers = load.answers
            run.warmup = Window.of(answers, answers[0].done if answers else 0.0, warm_end)
            run.load = busy.text + _client_errors(load)
            if first < 0:
                run.outcome = "the new version never answered"
                return run
            run.outcome = "replaced"
            # The same window as the canary's: from the moment the control plane marked the new
            # revision ready (and moved the traffic to it), as long as the paired canary's.
            revisions = self.client.get_deployment(NAMESPACE, name).revisions
            ready_at = next((r.ready_at for r in revisions if r.name != stable), None)
            start = as_epoch(ready_at) if ready_at is not None else load.answers[first].sent
            run.commit_to_ready_s = start - committed
            run.first_answer_s = load.answers[first].sent - start
            run.window = Window.of(answers, start, start + window_s)
            return run
        finally:
            self.remove(name)


def step_text(analysis: dict[str, Any]) -> str:
    """One recorded analysis: its step, verdict and what it saw (the judged latency, and the
    end-to-end one beside it when the judge compared service times)."""
    evidence = analysis.get("evidence", {})
    latency = evidence.get("latency", {})
    errors = evidence.get("error_rate", {})
    seen = ""
    if latency:
        measure = latency.get("measure", "end_to_end").replace("_", "-")
        seen += (
            f", median {measure} time canary {latency['canary_median_ms']:.1f} ms vs stable "
            f"{latency['stable_median_ms']:.1f} ms (p={latency['p_value']:.2g})"
        )
        end_to_end = latency.get("end_to_end")
        if end_to_end:
            seen += (
                f", end to end {end_to_end['canary_median_ms']:.1f} ms vs "
                f"{end_to_end['stable_median_ms']:.1f} ms"
            )
    if errors:
        seen += f", error rate canary {errors['canary']:.2%} vs stable {errors['stable']:.2%}"
    return (
        f"step {analysis.get('step', 0) + 1} ({analysis.get('percent')}%) "
        f"{analysis.get('result')} after {analysis.get('seconds', 0):.1f} s{seen}"
    )


def _client_errors(load: Load) -> str:
    if not load.failures:
        return ""
    return "; client-side failures: " + ", ".join(f"{k} x{v}" for k, v in load.failures.items())


# report ------------------------------------------------------------------------------------------
def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def ratio(replace: ReplaceRun, canary: CanaryRun) -> float | None:
    if replace.window is None or canary.window is None:
        return None
    if canary.window.failed == 0:
        return None if replace.window.failed == 0 else float("inf")
    return replace.window.failed / canary.window.failed


def window_cells(w: Window | None) -> str:
    if w is None:
        return f"{'-':>8s} {'-':>8s} {'-':>6s} {'-':>7s} {'-':>7s} {'-':>7s}"
    return (
        f"{w.seconds:8.2f} {w.requests:8d} {w.failed:6d} {w.share * 100:6.2f}% "
        f"{w.p50_ms:7.2f} {w.p99_ms:7.2f}"
    )


def median_cells(windows: Sequence[Window]) -> str:
    if not windows:
        return window_cells(None)
    return (
        f"{statistics.median(w.seconds for w in windows):8.2f} "
        f"{statistics.median(w.requests for w in windows):8.0f} "
        f"{statistics.median(w.failed for w in windows):6.0f} "
        f"{statistics.median(w.share for w in windows) * 100:6.2f}% "
        f"{statistics.median(w.p50_ms for w in windows):7.2f} "
        f"{statistics.median(w.p99_ms for w in windows):7.2f}"
    )


def revisions_text(w: Window | None) -> str:
    if w is None:
        return "-"
    per = ", ".join(f"{n} {c[0]} req {c[1]} failed" for n, c in w.by_revision.items())
    return f"{per}; statuses {w.statuses}"


def warmup_text(w: Window | None) -> str:
    if w is None:
        return "before the push: -"
    return (
        f"before the push: {w.requests} requests in {w.seconds:.1f} s, {w.failed} failed, "
        f"p50 {w.p50_ms:.2f} ms, p99 {w.p99_ms:.2f} ms"
    )


def outcome_text(run: CanaryRun) -> str:
    """The outcome and the step it came at."""
    if run.outcome == "promoted":
        return f"promoted after step {run.step + 1} ({run.weight}%)"
    if run.outcome == "rolled_back":
        return f"rolled_back at step {run.step + 1} ({run.weight}%)"
    return run.outcome


def verdict_lines(scenario: Scenario, first_percent: int) -> list[str]:
    """One line per goal of the scenario: how many runs met it, and PASS or MISS."""
    canary = scenario.canary
    runs = len(canary)

    def line(text: str, count: int, goal: str = "goal all") -> str:
        return f"  {text}: {count} of {runs} runs   {goal}  {verdict(count == runs)}"

    met = sum(scenario.met(r) for r in canary)
    if scenario.goal == PROMOTED:
        rolled_back = sum(r.outcome == "rolled_back" for r in canary)
        return [
            line("promoted, never rolled back", met, "goal all (no false rollbacks)"),
            f"  rolled back: {rolled_back} of {runs} runs (false rollbacks)",
        ]
    if scenario.goal == FIRST_STEP:
        return [line(f"rolled back at the first step ({first_percent}%)", met)]
    within = sum(
        1
        for r in canary
        if r.window is not None
        and r.window.failed <= r.weight / 100 * scenario.error_rate * r.window.requests
    )
    return [
        line("rolled back by itself", met),
        line("failed share <= canary weight x error rate", within),
    ]


def print_scenario(scenario: Scenario, args: argparse.Namespace) -> None:
    canary, replace = scenario.canary, scenario.replace
    print(f"\n[{scenario.label}] {scenario.title}")
    times = f"{'run':>4s} {'push':>6s} {'commit->canary':>14s} {'canary->end':>12s}"
    figures = f"{'window s':>8s} {'requests':>8s} {'failed':>6s} {'share':>7s} {'p50 ms':>7s}"
    print(
        f"  canary   {times} {'commit->end':>12s} {'gateway':>7s} {figures} "
        f"{'p99 ms':>7s} {'ceiling':>7s}  outcome"
    )
    for run in canary:
        print(
            f"           {run.index:4d} {run.push_s:6.2f} {fmt(run.commit_to_start_s):>14s} "
            f"{fmt(run.canary_to_end_s):>12s} {fmt(run.commit_to_end_s):>12s} "
            f"{fmt(run.gateway_s, '.3f'):>7s} {window_cells(run.window)} "
            f"{run.weight / 100 * scenario.error_rate * 100:6.2f}%  {outcome_text(run)}"
        )
    print(
        f"           {'med':>4s} {fmt(median([r.push_s for r in canary])):>6s} "
        f"{fmt(median([r.commit_to_start_s for r in canary])):>14s} "
        f"{fmt(median([r.canary_to_end_s for r in canary])):>12s} "
        f"{fmt(median([r.commit_to_end_s for r in canary])):>12s} "
        f"{fmt(median([r.gateway_s for r in canary]), '.3f'):>7s} "
        f"{median_cells([r.window for r in canary if r.window])}"
    )
    if replace:
        print(
            f"  replace  {'run':>4s} {'push':>6s} {'commit->ready':>14s} {'first answer':>12s} "
            f"{'':>20s} {figures} "
            f"{'p99 ms':>7s}  failed replace / canary"
        )
    ratios: list[float | None] = []
    for rrun, paired in zip(replace, canary, strict=False):
        r = ratio(rrun, paired)
        ratios.append(r)
        shown = fmt(r, ".1f", "x") if r is not None else "n/a (0 / 0)"
        print(
            f"           {rrun.index:4d} {rrun.push_s:6.2f} {fmt(rrun.commit_to_ready_s):>14s} "
            f"{fmt(rrun.first_answer_s, '.3f'):>12s} {'':>20s} {window_cells(rrun.window)}  "
            f"{shown}" + ("" if rrun.outcome == "replaced" else f"  {rrun.outcome}")
        )
    if replace:
        med_ratio = median(ratios)
        print(
            f"           {'med':>4s} {fmt(median([r.push_s for r in replace])):>6s} "
            f"{fmt(median([r.commit_to_ready_s for r in replace])):>14s} "
            f"{fmt(median([r.first_answer_s for r in replace]), '.3f'):>12s} {'':>20s} "
            f"{median_cells([r.window for r in replace if r.window])}  "
            + (fmt(med_ratio, ".1f", "x") if med_ratio is not None else "n/a")
        )
    print("  per run:")
    for run in canary:
        rate = run.canary_requests / run.window.seconds if run.window else 0.0
        floor = args.min_requests / rate if rate else None
        print(
            f"    canary {run.index}: {run.reason[:300]}\n"
            f"      last analysis' evidence: {run.evidence or '-'}; the canary answered "
            f"{rate:.1f} req/s, so {args.min_requests} requests took >= "
            f"{fmt(floor, '.2f', ' s')}\n"
            f"      window: {revisions_text(run.window)}\n"
            f"      {warmup_text(run.warmup)}; {run.load}"
        )
        for step in run.steps:
            print(f"      analysis: {step}")
    for rrun in replace:
        print(
            f"    replace {rrun.index}: window: {revisions_text(rrun.window)}\n"
            f"      {warmup_text(rrun.warmup)}; {rrun.load}"
        )
    print("\n".join(verdict_lines(scenario, args.steps[0])))


def summary_line(scenario: Scenario) -> str:
    canary, replace = scenario.canary, scenario.replace
    windows = [r.window for r in canary if r.window]
    rwindows = [r.window for r in replace if r.window]
    steps = ", ".join(outcome_text(r) for r in canary)
    text = (
        f"  {scenario.label + ':':21s} {sum(map(scenario.met, canary))} of {len(canary)} "
        f"{scenario.goal} ({steps}); commit->end "
        f"{fmt(median([r.commit_to_end_s for r in canary]), '.2f', ' s')} (commit->canary "
        f"{fmt(median([r.commit_to_start_s for r in canary]), '.2f', ' s')}, canary->end "
        f"{fmt(median([r.canary_to_end_s for r in canary]), '.2f', ' s')}); "
    )
    if not windows:
        return text + "no window measured"
    failed = statistics.median(w.failed for w in windows)
    requests = statistics.median(w.requests for w in windows)
    seconds = statistics.median(w.seconds for w in windows)
    canary_figures = (
        f"client p50 / p99 {statistics.median(w.p50_ms for w in windows):.2f} / "
        f"{statistics.median(w.p99_ms for w in windows):.2f} ms with canary"
    )
    if not rwindows:
        return text + f"{canary_figures} over {seconds:.2f} s; failed {failed:.0f}"
    if scenario.error_rate:
        ceiling = statistics.median(r.weight for r in canary) / 100 * scenario.error_rate
        ratios = median([ratio(r, c) for r, c in zip(replace, canary, strict=False)])
        return text + (
            f"failed {failed:.0f} of {requests:.0f} requests "
            f"({statistics.median(w.share for w in windows):.2%}, ceiling {ceiling:.2%}) with "
            f"canary, {statistics.median(w.failed for w in rwindows):.0f} "
            f"({statistics.median(w.share for w in rwindows):.2%}) with replace over the same "
            f"{seconds:.2f} s: {fmt(ratios, '.1f', 'x')} as many"
        )
    return text + (
        f"{canary_figures}, "
        f"{statistics.median(w.p50_ms for w in rwindows):.2f} / "
        f"{statistics.median(w.p99_ms for w in rwindows):.2f} ms with replace over the same "
        f"{seconds:.2f} s; failed {failed:.0f} and "
        f"{statistics.median(w.failed for w in rwindows):.0f}"
    )


# main --------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument(
        "--runs", type=int, default=5, help="runs per scenario, client count and strategy (5)"
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"of {','.join(SCENARIOS)} (all)"
    )
    parser.add_argument(
        "--workers", default="8,32", help="closed-loop client counts, each a set of runs (8,32)"
    )
    parser.add_argument(
        "--no-replace", action="store_true", help="skip the replace baseline of the regressions"
    )
    parser.add_argument("--steps", default="10,50,100", help="canary percents (10,50,100)")
    parser.add_argument("--min-requests", type=int, default=100, help="per revision, step (100)")
    parser.add_argument("--min-step-seconds", type=float, default=10.0, help="(10)")
    parser.add_argument("--max-step-seconds", type=float, default=120.0, help="(120)")
    parser.add_argument("--max-error-rate-increase", type=float, default=0.01, help="(0.01)")
    parser.add_argument("--latency-tolerance", type=float, default=0.2, help="(0.2)")
    parser.add_argument("--delay-ms", type=float, default=4.0, help="good version's sleep (4)")
    parser.add_argument("--error-rate", type=float, default=0.05, help="bad version's (0.05)")
    parser.add_argument("--slowdown", type=float, default=3.0, help="bad version's factor (3)")
    parser.add_argument("--speedup", type=float, default=0.5, help="faster version's factor (0.5)")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before the push (3 s)")
    parser.add_argument(
        "--tail", type=float, default=2.0, help="load kept after the rollback (2 s)"
    )
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if set(args.scenarios) - set(SCENARIOS) or not args.scenarios:
        parser.error(f"--scenarios takes {','.join(SCENARIOS)}")
    args.steps = [int(p) for p in args.steps.split(",") if p.strip()]
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error("--workers takes client counts separated by commas, like 8,32")
    if (
        args.runs < 1
        or not args.workers
        or min(args.workers) < 1
        or not 0 < args.error_rate < 1
        or args.slowdown <= 0
        or not 0 < args.speedup < 1
    ):
        parser.error(
            "--runs >= 1, --workers >= 1 each, 0 < --error-rate < 1, --slowdown > 0, "
            "0 < --speedup < 1"
        )
    return args


def stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the platform


def git_commit() -> str:
    """HEAD, and whether ``src/`` differs from it (the editable install imports the tree)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    return git("rev-parse", "--short", "HEAD") + (
        f" + uncommitted changes in src/ ({len(dirty.splitlines())} files)" if dirty else ""
    )


def benchmark(args: argparse.Namespace) -> None:
    from modelyard.client import Client

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    fail_every = round(1 / args.error_rate)
    error_rate = 1 / fail_every
    delay = args.delay_ms

    def make_scenario(key: str, workers: int) -> Scenario:
        good = {"delay_ms": delay, "fail_every": 0}
        if key == "error":
            return Scenario(
                key,
                f"new version fails 1 call in {fail_every} ({error_rate:.1%}), same {delay:g} ms "
                "sleep",
                good,
                {"delay_ms": delay, "fail_every": fail_every},
                error_rate,
                ROLLED_BACK,
                workers,
            )
        if key == "latency":
            return Scenario(
                key,
                f"new version sleeps {delay * args.slowdown:g} ms per call instead of {delay:g} "
                f"ms ({args.slowdown:g}x), fails nothing",
                good,
                {"delay_ms": delay * args.slowdown, "fail_every": 0},
                0.0,
                FIRST_STEP,
                workers,
            )
        return Scenario(
            key,
            f"new version sleeps {delay * args.speedup:g} ms per call instead of {delay:g} ms "
            f"({args.speedup:g}x), fails nothing: better, never to be rolled back",
            good,
            {"delay_ms": delay * args.speedup, "fail_every": 0},
            0.0,
            PROMOTED,
            workers,
        )

    scenarios = [make_scenario(key, w) for w in args.workers for key in args.scenarios]
    started = dt.datetime.now(dt.UTC)
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("modelyard", "numpy", "httpx", "uvicorn")
    )
    print(
        f"rollout benchmark: started {started:%Y-%m-%d %H:%M} UTC\n"
        f"machine: {machine_line()}; {versions}; "
        f"code {git_commit()}\n"
        f"platform: python -m modelyard up (SQLite, local blobs), one replica per revision; "
        f"model: python runtime, sleeps {delay:g} ms per call\n"
        f"load: {' and '.join(map(str, args.workers))} closed-loop clients, keep-alive HTTP/1.1 "
        f"through the gateway, {args.warmup:g} s before the push; {args.runs} run(s) per "
        f"scenario, client count and strategy"
        + (" (no replace baseline)" if args.no_replace else "")
        + "\n"
        f"canary: steps {args.steps}, min_requests {args.min_requests} per revision and step, "
        f"min_step_seconds {args.min_step_seconds:g}, max_step_seconds "
        f"{args.max_step_seconds:g}, max_error_rate_increase {args.max_error_rate_increase:g}, "
        f"latency_tolerance {args.latency_tolerance:g}\n"
        f"load average at start: {load_average()}",
        flush=True,
    )
    failure = ""
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-rollout-") as temp:
        work = Path(temp)
        platform_ = Platform(work / "home")
        try:
            token = platform_.start()
            with Client(url=f"http://127.0.0.1:{platform_.api_port}", api_key=token) as client:
                client.create_namespace(NAMESPACE)
                bench = Bench(client, platform_, args, work)
                for scenario in scenarios:
                    for index in range(1, args.runs + 1):
                        canary = bench.canary(scenario, index)
                        scenario.canary.append(canary)
                        line = (
                            f"  {scenario.label} run {index}: canary {outcome_text(canary)} "
                            f"(commit->end {fmt(canary.commit_to_end_s, '.2f', ' s')}, "
                            f"{canary.window.failed if canary.window else '-'} failed)"
                        )
                        if scenario.goal != PROMOTED and not args.no_replace:
                            window = canary.window.seconds if canary.window else 10.0
                            replace = bench.replace(scenario, index, window)
                            scenario.replace.append(replace)
                            line += (
                                f", replace {replace.outcome} "
                                f"({replace.window.failed if replace.window else '-'} failed in "
                                f"{window:.2f} s)"
                            )
                        print(f"{line}; load {load_average()}", flush=True)
        except Exception as exc:  # print what was measured before the failure
            failure = f"{type(exc).__name__}: {exc}"
            print(f"FAILED: {failure}\n{platform_.log_tail()}", flush=True)
        finally:
            platform_.stop()
    for scenario in scenarios:
        if scenario.canary:
            print_scenario(scenario, args)
    print(
        "\ncolumns (times in seconds): push = push() of the new version, upload and commit; "
        "commit->canary = end of push() to the rollout's started_at; canary->end = started_at "
        "to finished_at (the rollback or the promotion); gateway = finished_at to the last "
        "answer of a rolled back canary; window = the rollout's started_at to its end, or to a "
        "rolled back canary's last answer if later (replace: as long, from the new revision's "
        "ready_at); first answer = ready_at to the first request the new revision answered; "
        "requests, failed (non-200, no answer), share, p50/p99 (200s) = client requests "
        "completed in the window; ceiling = canary weight at the step reached x the new "
        "version's error rate; analysis = each step's verdict on the replicas' service times "
        "(x-modelyard-service-ms), with the gateway's end-to-end times beside them"
    )
    summary = [summary_line(scenario) for scenario in scenarios if scenario.canary]
    if summary:
        print(f"\nmedians of {args.runs} run(s):\n" + "\n".join(summary))
        verdicts = [
            f"  {scenario.label}: {sum(map(scenario.met, scenario.canary))} of "
            f"{len(scenario.canary)} {scenario.goal}, goal all  "
            + verdict(all(map(scenario.met, scenario.canary)))
            for scenario in scenarios
            if scenario.canary
        ]
        print("verdicts:\n" + "\n".join(verdicts))
    print(f"load average at end: {load_average()}")
    if failure:
        raise SystemExit(f"the benchmark stopped early: {failure}")


def main(argv: Sequence[str] | None = None) -> None:
    benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
