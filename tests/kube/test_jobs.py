"""The ``kubernetes`` step backend against the fake API server, whose kubelet runs a Job's pod as a
local process: attempts as Jobs, their results and logs, terminate, pods that cannot run, the
Role, and pipelines through a real control plane with ``step_backend = "kubernetes"``."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.kube.api import KubeApi, KubeApiError
from modelyard.kube.config import Cluster, KubernetesSettings
from modelyard.kube.jobs import KubeStepBackend
from modelyard.pipelines.backends import StepExit, StepLaunch, load_step_backend
from modelyard.pipelines.task import StepTask
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore, open_blob_store
from modelyard.testing import wait_for
from tests.deploy.test_helm_chart import ORCHESTRATOR_RULES
from tests.kube import flows
from tests.kube.fake_apiserver import FakeApiServer
from tests.kube.kubelet import ProcessKubelet
from tests.pipelines.conftest import Runner
from tests.pipelines.test_backends import task

KINDS = ("jobs", "secrets", "pods")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeApiServer, ProcessKubelet]]:
    kubelet = ProcessKubelet(tmp_path / "node")
    server = FakeApiServer(namespaces=("ml-team",), kubelet=kubelet).start()
    yield server, kubelet
    kubelet.close()
    server.stop()


class Ended:
    """The backend's on_exit, as an event to wait on."""

    def __init__(self, backend: KubeStepBackend) -> None:
        self.backend = backend
        self.event = threading.Event()
        backend.on_exit = self.event.set

    def wait(self, node: str, timeout: float = 60.0) -> StepExit:
        found: list[StepExit] = []

        def ended() -> bool:
            self.event.wait(0.05)
            self.event.clear()
            outcome = self.backend.check("run-1", node)
            if outcome is not None:
                found.append(outcome)
            return bool(found)

        wait_for(ended, timeout, f"{node} to end")
        return found[0]


def backend_for(apiserver: FakeApiServer, tmp_path: Path, image: str = "img:1") -> KubeStepBackend:
    settings = KubernetesSettings(namespaces={"team": "ml-team"}, image=image)
    api = KubeApi(Cluster(apiserver.url), "modelyard")
    return KubeStepBackend(settings, api, tmp_path / "runs", "http://modelyard-api:8700")


@pytest.fixture
def backend(
    cluster: tuple[FakeApiServer, ProcessKubelet], tmp_path: Path
) -> Iterator[KubeStepBackend]:
    kube = backend_for(cluster[0], tmp_path)
    yield kube
    kube.close()


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return open_blob_store((tmp_path / "blobs").as_uri())


def nothing_left(apiserver: FakeApiServer) -> bool:
    return all(apiserver.list(kind, "ml-team") == [] for kind in KINDS)


def test_an_attempt_runs_as_a_job_and_its_result_comes_back_through_the_pod_status(
    cluster: tuple[FakeApiServer, ProcessKubelet], backend: KubeStepBackend, blobs: BlobStore
) -> None:
    apiserver, _ = cluster
    ended = Ended(backend)
    env = {"MODELYARD_API_KEY": "key-secret", "MODELYARD_URL": "http://127.0.0.1:8700"}
    backend.launch(
        StepLaunch("run-1", "n", 1, task(blobs, "double", factor=2), env, namespace="team")
    )
    (job,) = apiserver.list("jobs", "ml-team")
    assert job["spec"]["backoffLimit"] == 0
    (secret,) = apiserver.list("secrets", "ml-team")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert "key-secret" not in json.dumps(job)
    url = base64.b64decode(secret["data"]["env.MODELYARD_URL"]).decode()
    assert url == "http://modelyard-api:8700"  # where pods reach the API
    outcome = ended.wait("n")
    assert outcome.code == 0, backend.logs("run-1", "n")
    assert outcome.result["artifacts"]["out"]["digest"] == hashlib.sha256(b"abab").hexdigest()
    assert outcome.result["result"] == 2
    assert backend.check("run-1", "n") is None  # reported once
    log = backend.logs("run-1", "n")
    assert log.startswith("--- attempt 1 of n (Job n-run-1-a1-") and "doubled in" in log
    assert backend.log_path("run-1", "n").read_text() == log
    wait_for(lambda: nothing_left(apiserver), 10, "the Job, its pod and Secret deleted")


def lingering(backend: KubeStepBackend, node: str) -> bool:
    return "lingering" in backend.logs("run-1", node)


def test_terminate_deletes_the_job_and_its_pod_across_an_expired_watch(
    cluster: tuple[FakeApiServer, ProcessKubelet], backend: KubeStepBackend, blobs: BlobStore
) -> None:
    apiserver, _ = cluster
    ended = Ended(backend)
    for node in ("polite", "forced"):
        backend.launch(StepLaunch("run-1", node, 1, task(blobs, "linger"), {}, namespace="team"))
    for node, force, code in (("polite", False, -15), ("forced", True, -9)):
        running = functools.partial(lingering, backend, node)
        wait_for(running, 60, f"{node} to run")
        apiserver.expire_watches()  # the backend lists again and goes on watching
        backend.terminate("run-1", node, force=force)
        assert ended.wait(node).code == code
        assert "lingering" in backend.log_path("run-1", node).read_text()  # kept
    assert nothing_left(apiserver)
    backend.terminate("run-1", "polite")  # ended: nothing


def test_a_steps_lines_reach_its_log_file_while_its_pod_runs(
    cluster: tuple[FakeApiServer, ProcessKubelet], backend: KubeStepBackend, blobs: BlobStore
) -> None:
    """``runs logs`` (and ``-f``) read the node's log file: the pod's lines are copied there as
    they are written, each once."""
    apiserver, _ = cluster
    ended = Ended(backend)
    backend.launch(StepLaunch("run-1", "n", 1, task(blobs, "linger"), {}, namespace="team"))
    path = backend.log_path("run-1", "n")
    wait_for(lambda: "lingering" in path.read_text(), 60, "the pod's line in the log file")
    (pod,) = apiserver.list("pods", "ml-team")
    assert pod["status"]["phase"] == "Running" and backend.check("run-1", "n") is None
    backend.terminate("run-1", "n")
    assert ended.wait("n").code == -15
    assert path.read_text().count("lingering") == 1


WHERE = """
import sys

def where(out):
    import modelyard
    with open(out.path, "w") as f:
        f.write(sys.version)
    return modelyard.__file__
"""


def test_a_step_in_its_own_image_runs_the_runner_its_init_container_copied(
    cluster: tuple[FakeApiServer, ProcessKubelet],
    backend: KubeStepBackend,
    blobs: BlobStore,
    tmp_path: Path,
) -> None:
    """The node's "image" is this interpreter: modelyard comes from the shared volume, as it
    would in an image that does not have it."""
    apiserver, _ = cluster
    ended = Ended(backend)
    spec: StepTask = {**task(blobs, "where"), "module_source": WHERE}
    image = "python:3.11-slim"
    backend.launch(StepLaunch("run-1", "n", 1, spec, {}, namespace="team", image=image))
    (job,) = apiserver.list("jobs", "ml-team")
    pod = job["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["initContainers"] + pod["containers"]] == ["img:1", image]
    outcome = ended.wait("n")
    assert outcome.code == 0, backend.logs("run-1", "n")
    loaded_from = Path(outcome.result["result"])
    node = tmp_path / "node" / "ml-team"
    (volume,) = node.glob("n-run-1-a1-*/volumes/runner")
    assert loaded_from == volume / "modelyard" / "modelyard" / "__init__.py"
    assert (volume / "launch.py").is_file() and any((volume / "packages").glob("pydantic*"))
    wait_for(lambda: nothing_left(apiserver), 10, "the Job deleted")


def test_the_next_control_plane_deletes_the_jobs_of_one_that_died(
    cluster: tuple[FakeApiServer, ProcessKubelet], tmp_path: Path, blobs: BlobStore
) -> None:
    apiserver, _ = cluster
    dead = backend_for(apiserver, tmp_path / "dead")
    dead.launch(StepLaunch("run-1", "n", 1, task(blobs, "linger"), {}, namespace="team"))
    wait_for(functools.partial(lingering, dead, "n"), 60, "the step to run")
    (orphan,) = apiserver.list("jobs", "ml-team")
    successor = backend_for(apiserver, tmp_path)
    try:
        ended = Ended(successor)
        successor.launch(StepLaunch("run-1", "n", 2, task(blobs, "linger"), {}, namespace="team"))
        wait_for(
            lambda: apiserver.get("jobs", "ml-team", orphan["metadata"]["name"]) is None,
            10,
            "the orphan Job deleted",
        )
        wait_for(functools.partial(lingering, successor, "n"), 60, "the new attempt to run")
        successor.terminate("run-1", "n", force=True)
        assert ended.wait("n").code == -9
    finally:
        successor.close()
        dead.close()
    assert nothing_left(apiserver)


def test_a_missing_namespace_or_an_image_that_cannot_be_pulled_fails_with_kubernetes_reason(
    cluster: tuple[FakeApiServer, ProcessKubelet], tmp_path: Path, blobs: BlobStore
) -> None:
    apiserver, kubelet = cluster
    kubelet.unpullable.add("img:gone")
    backend = backend_for(apiserver, tmp_path, image="img:gone")
    try:
        ended = Ended(backend)
        spec = task(blobs, "double", factor=1)
        with pytest.raises(KubeApiError, match='404 NotFound: namespaces "elsewhere" not found'):
            backend.launch(StepLaunch("run-1", "n", 1, spec, {}, namespace="elsewhere"))
        assert backend.check("run-1", "n") is None
        backend.launch(StepLaunch("run-1", "n", 1, spec, {}, namespace="team"))
        outcome = ended.wait("n")
        assert outcome.code == 1 and "ImagePullBackOff" in outcome.result["error"]
        assert "ImagePullBackOff" in backend.logs("run-1", "n")
        wait_for(lambda: nothing_left(apiserver), 10, "the Job deleted")
    finally:
        backend.close()


def test_steps_need_no_more_than_the_role(
    cluster: tuple[FakeApiServer, ProcessKubelet], backend: KubeStepBackend, blobs: BlobStore
) -> None:
    """Every request of an attempt's life (apply, watch, logs, delete, terminate) is one the
    chart's Role grants."""
    apiserver, _ = cluster
    ended = Ended(backend)
    backend.launch(
        StepLaunch("run-1", "a", 1, task(blobs, "double", factor=1), {}, namespace="team")
    )
    ended.wait("a")
    backend.launch(StepLaunch("run-1", "b", 1, task(blobs, "linger"), {}, namespace="team"))
    wait_for(functools.partial(lingering, backend, "b"), 60, "b to run")
    backend.terminate("run-1", "b")
    ended.wait("b")
    allowed = {
        (group, resource, verb)
        for groups, resources, verbs in ORCHESTRATOR_RULES
        for group in groups
        for resource in resources
        for verb in verbs
    }
    groups = {"api/v1": "", "apis/apps/v1": "apps", "apis/batch/v1": "batch"}
    pattern = re.compile(r"^/(api/v1|apis/\w+/v1)/namespaces/[^/]+/(\w+)(/[^/?]+)?(/\w+)?")
    for method, path in apiserver.requests:
        match = pattern.match(path)
        assert match is not None, path
        resource = match[2] + (match[4] or "")
        if method == "GET":
            verbs = {"watch"} if "watch=true" in path else {"get" if match[3] else "list"}
        elif method == "PATCH" and "force=" in path:
            verbs = {"patch", "create"}
        else:
            verbs = {{"PATCH": "patch", "DELETE": "delete", "POST": "create"}[method]}
        for verb in verbs:
            assert (groups[match[1]], resource, verb) in allowed, f"{method} {path} needs {verb}"


@pytest.fixture
def kube_runner(cluster: tuple[FakeApiServer, ProcessKubelet], tmp_path: Path) -> Iterator[Runner]:
    settings = Settings(
        home=tmp_path / "home",
        api_port=0,
        step_grace_seconds=0.5,
        step_backend="kubernetes",
        kubernetes={"api_url": cluster[0].url, "namespaces": {"team": "ml-team"}},
    )
    assert isinstance(load_step_backend("kubernetes", settings), KubeStepBackend)
    plane = ControlPlane.build(settings)
    plane.namespaces.create("team")
    plane.start_controllers()
    yield Runner(plane, tmp_path)
    plane.close()


@pytest.mark.slow
def test_a_two_step_pipeline_runs_as_jobs(
    cluster: tuple[FakeApiServer, ProcessKubelet], kube_runner: Runner
) -> None:
    apiserver, _ = cluster
    run = kube_runner.run(flows.two_steps, rows=4)
    assert run.state == "succeeded", run.reason
    assert [(s.node, s.state, s.exit_code) for s in run.steps] == [
        ("produce", "succeeded", 0),
        ("consume", "succeeded", 0),
    ]
    executor = kube_runner.plane.executor
    log = executor.log_path(run.id, "consume").read_text()
    assert log.startswith("--- attempt 1 of consume (Job consume-") and "consumed 4 rows" in log
    assert "produced 4 rows" in executor.log_path(run.id, "produce").read_text()
    wait_for(lambda: nothing_left(apiserver), 10, "every Job gone")


@pytest.mark.slow
def test_a_failing_step_and_a_cancelled_run_on_kubernetes(
    cluster: tuple[FakeApiServer, ProcessKubelet], kube_runner: Runner, tmp_path: Path
) -> None:
    apiserver, _ = cluster
    failed = kube_runner.run(flows.failing)
    assert failed.state == "failed"
    assert "no such table: events" in (failed.steps[0].reason or "")
    run_id = kube_runner.start(flows.waiting)
    log = kube_runner.plane.executor.log_path(run_id, "wait-forever")
    plane = kube_runner.plane
    plane.ensure_admin_key()
    token = plane.settings.admin_key_path.read_text().strip()
    with (
        BackgroundServer(plane) as server,
        Client(server.url, token, cache_dir=tmp_path / "cache") as client,
    ):
        lines = client.run_logs("team", run_id, follow=True)  # `runs logs -f`
        assert next(line for line in lines if "waiting" in line) == "[wait-forever] waiting"
        kube_runner.plane.executor.cancel(run_id)
        assert "waiting" not in "".join(lines)  # ends with the run, each line once
    run = kube_runner.wait(run_id)
    assert run.state == "cancelled" and run.steps[0].state == "cancelled"
    assert (
        log.read_text().startswith("--- attempt 1 of wait-forever") and "waiting" in log.read_text()
    )
    wait_for(lambda: nothing_left(apiserver), 10, "the Job and its pod deleted")


@pytest.mark.slow
def test_a_step_whose_result_outgrows_the_termination_message_runs_as_a_job(
    cluster: tuple[FakeApiServer, ProcessKubelet], kube_runner: Runner
) -> None:
    """A folder of hundreds of files: its record alone is far over the 4 KiB Kubernetes keeps
    of a termination message, so it comes back through the blob store."""
    apiserver, _ = cluster
    run = kube_runner.run(flows.folder_of_files, files=300)
    executor = kube_runner.plane.executor
    assert run.state == "succeeded", [
        (step.node, step.reason, executor.log_path(run.id, step.node).read_text())
        for step in run.steps
    ]
    steps = {step.node: step for step in run.steps}
    made, counted = steps["many-files"], steps["count-files"]
    assert len(json.dumps(made.outputs)) > 4096, made.outputs
    assert len(made.outputs["artifacts"]["out"]["files"]) == 300
    assert counted.outputs["result"] == 300
    wait_for(lambda: nothing_left(apiserver), 10, "every Job gone")


@pytest.mark.slow
def test_a_pipeline_step_that_names_an_image_runs_in_it(
    cluster: tuple[FakeApiServer, ProcessKubelet], kube_runner: Runner, tmp_path: Path
) -> None:
    apiserver, _ = cluster
    run = kube_runner.run(flows.own_image)
    assert run.state == "succeeded", run.reason
    (volume,) = (tmp_path / "node" / "ml-team").glob("where-from-*/volumes/runner")
    # the DSL's image reached the Job: its runner came from the init container's volume
    loaded_from = run.steps[0].outputs["result"]
    assert loaded_from == str(volume / "modelyard" / "modelyard" / "__init__.py")
    wait_for(lambda: nothing_left(apiserver), 10, "the Job gone")
