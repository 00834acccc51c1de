"""Kubernetes orchestrator benchmark, against the fake API server of the tests (no cluster here).

What it measures, with ``--deployments`` (default 100) deployments of one revision each:

- steady state: the API calls per minute while the serving controller's ticks ask for what
  already runs (``scale`` of every revision every ``--tick-ms``, default 50 ms, for
  ``--seconds``, default 20): the goal is none beyond the open Pod watch of each namespace;
- calls per revision rollout (the first ``scale`` of a new revision: anchor, Secret, Deployment)
  and per scale change (the scale subresource), and the time each takes;
- commit -> Deployment applied: a real control plane (``ControlPlane`` with
  ``orchestrator = "kubernetes"`` and its API on a free port) with a deployment following
  ``iris@latest``; the time from the end of ``push()`` of a new version to the new revision's
  Deployment existing in the API server, ``--commits`` times (default 5).

The fake answers on loopback from a thread of this process, so times are this machine's cost of
the orchestrator's own work and HTTP round trips, not a real API server's (etcd writes,
admission): read them as the floor, and the call counts as the result.

    python bench/kubernetes.py [--deployments 100] [--seconds 20] [--commits 5]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import argument_parser  # noqa: E402
from tests.kube.fake_apiserver import FakeApiServer  # noqa: E402

from modelyard.kube.api import KubeApi  # noqa: E402
from modelyard.kube.config import Cluster, KubernetesSettings  # noqa: E402
from modelyard.kube.orchestrator import KubeOrchestrator  # noqa: E402
from modelyard.serving.deployments import DeploymentSpec, Revision  # noqa: E402
from modelyard.testing import wait_for  # noqa: E402

NAMESPACE = "ml-team"


def revision(i: int) -> Revision:
    return Revision(
        id=f"{i:032x}",
        number=1,
        name=f"model-{i}-00001",
        namespace="team",
        deployment=f"model-{i}",
        deployment_id=str(i),
        model=f"team/model-{i}@1",
        spec=DeploymentSpec(model=f"model-{i}@1"),
        state="deploying",
        token="t" * 64,
    )


def orchestrator_figures(deployments: int, seconds: float, tick_ms: float) -> None:
    server = FakeApiServer(namespaces=(NAMESPACE,)).start()
    settings = KubernetesSettings(namespaces={"team": NAMESPACE}, image="img:1")
    orch = KubeOrchestrator(settings, KubeApi(Cluster(server.url), "modelyard"))
    orch.env_for = lambda r: {"MODELYARD_URL": "http://api:8700", "MODELYARD_API_KEY": "k"}
    orch.start()
    revisions = [revision(i) for i in range(deployments)]
    try:
        before, started = len(server.requests), time.perf_counter()
        for rev in revisions:
            orch.scale(rev, 1)
        rollout_s = time.perf_counter() - started
        rollout_calls = len(server.requests) - before
        wait_for(
            lambda: all(len(orch.replicas(r.id)) == 1 for r in revisions),
            60,
            "one replica each",
            0.01,
        )

        before, ticks, started = len(server.requests), 0, time.monotonic()
        while time.monotonic() - started < seconds:
            for rev in revisions:
                orch.scale(rev, 1)
            ticks += 1
            time.sleep(tick_ms / 1000)
        elapsed = time.monotonic() - started
        steady = server.requests[before:]
        watches = [p for _, p in steady if "watch=true" in p]

        before, started = len(server.requests), time.perf_counter()
        for rev in revisions:
            orch.scale(rev, 2)
        scale_s = time.perf_counter() - started
        scale_calls = len(server.requests) - before
        wait_for(
            lambda: all(len(orch.replicas(r.id)) == 2 for r in revisions),
            60,
            "two replicas each",
            0.01,
        )
    finally:
        orch.stop()
        server.stop()
    print(f"deployments: {deployments} (one revision each), one namespace")
    print(
        f"steady state: {ticks} controller ticks x {deployments} scale() calls in {elapsed:.1f} s: "
        f"{len(steady) - len(watches)} API calls ({(len(steady) - len(watches)) / elapsed * 60:.1f}"
        f"/min) besides {len(watches)} watch request(s) re-opened (1 open watch per namespace)"
    )
    print(
        f"revision rollout: {rollout_calls / deployments:.1f} calls per revision "
        f"(anchor, Secret, Deployment by server-side apply), "
        f"{rollout_s / deployments * 1000:.2f} ms each"
    )
    print(
        f"scale change: {scale_calls / deployments:.1f} calls per change (scale subresource), "
        f"{scale_s / deployments * 1000:.2f} ms each"
    )


def commit_figures(commits: int) -> None:
    from modelyard.api.server import BackgroundServer
    from modelyard.client import Client
    from modelyard.controlplane import ControlPlane
    from modelyard.registry.versions import VersionSpec
    from modelyard.settings import Settings

    server = FakeApiServer(namespaces=(NAMESPACE,)).start()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        settings = Settings(
            home=home / "home",
            api_port=0,
            orchestrator="kubernetes",
            kubernetes={"api_url": server.url, "namespaces": {"team": NAMESPACE}},
        )
        plane = ControlPlane.build(settings)
        plane.ensure_admin_key()
        token = settings.admin_key_path.read_text().strip()
        model = home / "model"
        model.mkdir()
        (model / "model.py").write_text("def predict(inputs):\n    return inputs\n")
        times = []
        try:
            with (
                BackgroundServer(plane) as api,
                Client(api.url, token, cache_dir=home / "cache") as client,
            ):
                client.create_namespace("team")
                client.push("team/echo", model, VersionSpec(runtime="python"))
                client.create_deployment("team", "echo", "echo@latest")
                wait_for(
                    lambda: server.get("deployments", NAMESPACE, "echo-r1") is not None,
                    60,
                    "echo-r1",
                    0.01,
                )
                for n in range(2, commits + 2):
                    (model / "model.py").write_text(
                        f"# v{n}\ndef predict(inputs):\n    return inputs\n"
                    )
                    client.push("team/echo", model, VersionSpec(runtime="python"))
                    committed = time.perf_counter()
                    wait_for(
                        lambda n=n: server.get("deployments", NAMESPACE, f"echo-r{n}") is not None,
                        60,
                        f"echo-r{n}",
                        0.01,
                    )
                    times.append(time.perf_counter() - committed)
        finally:
            plane.close()
            server.stop()
    print(
        f"commit -> new revision's Deployment applied ({commits} commits): "
        f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
    )


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tick-ms", type=float, default=50.0)
    parser.add_argument("--commits", type=int, default=5)
    args = parser.parse_args()
    orchestrator_figures(args.deployments, args.seconds, args.tick_ms)
    commit_figures(args.commits)


if __name__ == "__main__":
    main()
