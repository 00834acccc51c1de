"""A kubelet for the fake API server that runs a pod's containers as local processes.

It does what a node does for the pods modelyard renders: the init containers one after the other,
then the container, its environment from values and Secrets (``secretKeyRef``), each
``emptyDir`` a folder of its own, readiness from the container's ``readinessProbe`` (an HTTP GET),
and a pod status the API server reports as a real kubelet would (``Running``, ``Ready``, a crash
loop with the exit code and the log's last lines). What it simulates rather than does: a pod's
own network namespace is a loopback address of its own (127.0.77.N) put in place of ``0.0.0.0``
in the arguments, a mount is the volume's folder put in place of the mount path in arguments and
environment, the image is this interpreter (``python`` runs ``sys.executable``), and a container
that exits is not restarted: its pod reports a crash loop at once.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.kube.fake_apiserver import FakeApiServer, ready_status

CRASH_RESTARTS = 3


class ProcessKubelet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.addresses: dict[str, str] = {}
        """Pod name -> its address."""
        self._lock = threading.Lock()
        self._next = 0
        self._stopped: dict[str, threading.Event] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def run_pod(self, server: FakeApiServer, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        with self._lock:
            self._next += 1
            ip = f"127.0.77.{self._next}"
            self.addresses[name] = ip
            self._stopped[name] = threading.Event()
        thread = threading.Thread(target=self._run, args=(server, pod, ip), daemon=True)
        thread.start()

    def stop_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            stopped = self._stopped.get(name)
            process = self._processes.pop(name, None)
        if stopped is not None:
            stopped.set()
        if process is not None:
            process.terminate()
            threading.Thread(target=_reap, args=(process,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            names = list(self._stopped)
        for name in names:
            self.stop_pod("", name)

    def _run(self, server: FakeApiServer, pod: dict[str, Any], ip: str) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        namespace, name = meta["namespace"], meta["name"]
        stopped = self._stopped[name]
        folder = self.root / namespace / name
        volumes = {v["name"]: folder / "volumes" / v["name"] for v in spec.get("volumes") or []}
        for path in volumes.values():
            path.mkdir(parents=True, exist_ok=True)
        log = folder / "log"
        for init in spec.get("initContainers") or []:
            argv, env = self._container(server, namespace, init, volumes, ip, folder)
            with open(log, "ab") as out:
                code = subprocess.run(argv, env=env, stdout=out, stderr=out, timeout=300).returncode
            if stopped.is_set():
                return
            if code != 0:
                server.set_pod_status(
                    namespace, name, _crashed("initContainerStatuses", init, code, log)
                )
                return
        (container,) = spec["containers"]
        argv, env = self._container(server, namespace, container, volumes, ip, folder)
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
        with self._lock:
            if stopped.is_set():
                process.kill()
                return
            self._processes[name] = process
        status = ready_status(ip)
        status["conditions"][-1]["status"] = "False"
        status["containerStatuses"][0]["ready"] = False
        server.set_pod_status(namespace, name, status)
        probe = container["readinessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports") or []}
        url = f"http://{ip}:{ports.get(probe['port'], probe['port'])}{probe['path']}"
        ready = False
        with httpx.Client(timeout=1.0) as http:
            while not stopped.wait(0.1):
                code = process.poll()
                if code is not None:
                    server.set_pod_status(
                        namespace, name, _crashed("containerStatuses", container, code, log)
                    )
                    return
                if not ready:
                    with contextlib.suppress(httpx.HTTPError):
                        ready = http.get(url).status_code == 200
                    if ready:
                        server.set_pod_status(namespace, name, ready_status(ip))

    def _container(
        self,
        server: FakeApiServer,
        namespace: str,
        container: dict[str, Any],
        volumes: dict[str, Path],
        ip: str,
        folder: Path,
    ) -> tuple[list[str], dict[str, str]]:
        mounts = {
            m["mountPath"]: str(volumes[m["name"]]) for m in container.get("volumeMounts") or []
        }

        def local(value: str) -> str:
            for mount, path in mounts.items():
                if value == mount or value.startswith(mount + "/"):
                    return path + value[len(mount) :]
            return ip if value == "0.0.0.0" else value

        argv = [local(a) for a in [*container.get("command", []), *container.get("args", [])]]
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        env = {"PATH": str(Path(sys.executable).parent), "HOME": str(folder)}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = local(item["value"])
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                secret = server.get("secrets", namespace, ref["name"]) or {}
                env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return argv, env


def _crashed(kind: str, container: dict[str, Any], code: int, log: Path) -> dict[str, Any]:
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:]) if log.exists() else ""
    return {
        "phase": "Pending" if kind == "initContainerStatuses" else "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        kind: [
            {
                "name": container["name"],
                "ready": False,
                "restartCount": CRASH_RESTARTS,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": code, "message": tail}},
            }
        ],
    }


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
