"""The serving benchmark's modelyard target and its extra figures: the gateway's added latency,
commit-to-serving, the first answer from zero (launcher warm and cold).

Part of ``bench/serving.py``, which describes the method."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import signal
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from _harness import (
    UP,
    alive,
    children_map,
    ident,
    platform_env,
    process_label,
    replica_token,
    signal_each,
    wait_until,
)
from serving_load import (
    NAMESPACE,
    Row,
    Started,
    Target,
    check_answer,
    drive,
    http_call,
    http_ok,
    modelyard_infer_body,
)
from serving_peers import Models, Processes


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
                {"x-modelyard-replica-token": replica_token(api_port, auth, f"{NAMESPACE}/iris")},
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
