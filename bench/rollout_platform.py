"""The rollout benchmark's platform and driver: the model versions, the platform started on a
temporary home, and `Bench`, which runs one scenario's replace and canary rollouts under load.

Part of ``bench/rollout.py``, which describes the method."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from _harness import (
    UP,
    launch,
    load_average,
    machine_busy,
    platform_env,
    wait_until,
)
from rollout_load import CanaryRun, Load, ReplaceRun, Scenario, Window
from rollout_report import client_errors, step_text

NAMESPACE = "bench"
ROLLOUT_TIMEOUT_S = 300.0
POLL_S = 0.1

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
            run.load = busy.text + client_errors(load)
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
            run.load = busy.text + client_errors(load)
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
