"""A kubelet for the fake API server that runs a pod's containers as local processes.

It does what a node does for the pods modelyard renders: the init containers one after the other,
then the container, its environment from values and Secrets (``secretKeyRef``), each
``emptyDir`` a folder of its own, readiness from the container's ``readinessProbe`` (an HTTP GET),
and a pod status the API server reports as a real kubelet would (``Running``, ``Ready``, a crash
loop with the exit code and the log's last lines). What it simulates rather than does: a pod's
own network namespace is a loopback address of its own (127.0.77.N) put in place of ``0.0.0.0``
in the arguments, a mount is the volume's folder put in place of the mount path in arguments and
environment, every image is this interpreter (``python`` and ``python3`` run ``sys.executable``;
so a step's own image runs the runner its init container copied, the way a real one would: check
where modules came from to tell), and a container
that exits is not restarted: its pod reports a crash loop at once.

A pod with ``restartPolicy: Never`` (a Job's) runs its container once: ``Succeeded`` or ``Failed``
with the exit code and the termination message (``terminationMessagePath``, 4 KiB kept). Secret
volumes are written as files, once the Secret exists (it may be applied after the pod's Job);
``workingDir`` is the container's current directory; ``pod_log`` is what the API server serves as
``pods/NAME/log``; an image in ``unpullable`` leaves the pod in ``ImagePullBackOff``.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.kube.fake_apiserver import FakeApiServer
from tests.kube.fake_controllers import now as _now
from tests.kube.fake_controllers import ready_status

CRASH_RESTARTS = 3
MESSAGE_LIMIT = 4096
VOLUME_WAIT_SECONDS = 30.0


class ProcessKubelet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.addresses: dict[str, str] = {}
        """Pod name -> its address."""
        self._lock = threading.Lock()
        self._next = 0
        self._stopped: dict[str, threading.Event] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._started: set[str] = set()
        self.unpullable: set[str] = set()
        """Images this node cannot pull: their pods wait in ``ImagePullBackOff``."""

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

    def pod_log(self, namespace: str, name: str) -> str | None:
        with self._lock:
            if name not in self._started:
                return None
        log = self.root / namespace / name / "log"
        return log.read_text(errors="replace") if log.exists() else ""

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
        if not self._fill_volumes(server, namespace, spec, volumes, stopped):
            return
        unpullable = [c for c in spec["containers"] if c["image"] in self.unpullable]
        if unpullable:
            server.set_pod_status(namespace, name, _back_off(unpullable[0]))
            return
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
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []}
        workdir = _local(container.get("workingDir", str(folder)), mounts)
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=out, cwd=workdir)
        with self._lock:
            self._started.add(name)
            if stopped.is_set():
                process.kill()
                return
            self._processes[name] = process
        if spec.get("restartPolicy") == "Never":
            self._run_to_end(server, pod, ip, process, _local(_message_path(container), mounts))
            return
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
                exited = process.poll()
                if exited is not None:
                    server.set_pod_status(
                        namespace, name, _crashed("containerStatuses", container, exited, log)
                    )
                    return
                if not ready:
                    with contextlib.suppress(httpx.HTTPError):
                        ready = http.get(url).status_code == 200
                    if ready:
                        server.set_pod_status(namespace, name, ready_status(ip))

    def _fill_volumes(
        self,
        server: FakeApiServer,
        namespace: str,
        spec: dict[str, Any],
        volumes: dict[str, Path],
        stopped: threading.Event,
    ) -> bool:
        """Write each Secret volume's files, waiting for the Secret as a kubelet does (it may be
        applied after the pod's owner); False when it never came or the pod went."""
        deadline = time.monotonic() + VOLUME_WAIT_SECONDS
        for volume in spec.get("volumes") or []:
            source = volume.get("secret")
            if source is None:
                continue
            while (secret := server.get("secrets", namespace, source["secretName"])) is None:
                if stopped.wait(0.02) or time.monotonic() > deadline:
                    return False
            data = secret.get("data") or {}
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                path = volumes[volume["name"]] / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(base64.b64decode(data[item["key"]]))
        return not stopped.is_set()

    def _run_to_end(
        self,
        server: FakeApiServer,
        pod: dict[str, Any],
        ip: str,
        process: subprocess.Popen[bytes],
        message_path: str,
    ) -> None:
        """A pod that is not restarted (a Job's): Running, then Succeeded or Failed with the
        container's exit code and its termination message (Kubernetes keeps 4 KiB of it)."""
        meta, (container,) = pod["metadata"], pod["spec"]["containers"]
        namespace, name = meta["namespace"], meta["name"]
        running = {"name": container["name"], "ready": True, "restartCount": 0}
        started = {"startedAt": _now()}
        server.set_pod_status(
            namespace,
            name,
            {
                "phase": "Running",
                "podIP": ip,
                "startTime": _now(),
                "containerStatuses": [{**running, "state": {"running": started}}],
            },
        )
        code = process.wait()
        if self._stopped[name].is_set():
            return  # deleted: its status goes with it
        code = 128 - code if code < 0 else code  # killed by a signal, as a runtime reports it
        message = Path(message_path)
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            **started,
            "finishedAt": _now(),
            "message": message.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace")
            if message.is_file()
            else "",
        }
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "podIP": ip,
            "containerStatuses": [{**running, "ready": False, "state": {"terminated": terminated}}],
        }
        server.set_pod_status(namespace, name, status)

    def _container(
        self,
        server: FakeApiServer,
        namespace: str,
        container: dict[str, Any],
        volumes: dict[str, Path],
        ip: str,
        folder: Path,
    ) -> tuple[list[str], dict[str, str]]:
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []}

        def local(value: str) -> str:
            return ip if value == "0.0.0.0" else _local(value, mounts)

        argv = [local(a) for a in [*container.get("command", []), *container.get("args", [])]]
        if argv and argv[0] in ("python", "python3"):
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


def _local(value: str, mounts: dict[str, Path]) -> str:
    """A path in the container as the path of its volume's folder on this machine."""
    for mount, path in mounts.items():
        if value == mount or value.startswith(mount + "/"):
            return str(path) + value[len(mount) :]
    return value


def _message_path(container: dict[str, Any]) -> str:
    return str(container.get("terminationMessagePath") or "/dev/termination-log")


def _back_off(container: dict[str, Any]) -> dict[str, Any]:
    image = container["image"]
    return {
        "phase": "Pending",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {
                "name": container["name"],
                "image": image,
                "ready": False,
                "restartCount": 0,
                "state": {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}"',
                    }
                },
            }
        ],
    }


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
