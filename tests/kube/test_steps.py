"""Step attempts as Job manifests, and how a Job's pod says the attempt ended: pure functions."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from modelyard.kube import pods, steps
from modelyard.pipelines.backends import StepLaunch
from modelyard.pipelines.task import StepTask
from tests.kube import schemas

TASK: StepTask = {
    "module": "flows",
    "module_source": "def f():\n    return 1\n",
    "code_root": None,
    "function": "f",
    "params": {},
    "inputs": {},
    "outputs": {"out": {"type": "Dataset", "uri": "modelyard://runs/r/n/out"}},
    "blobs": {"url": "s3://bucket/blobs", "options": {"key": "blob-secret"}},
}
OWNER = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "make-2-run", "uid": "uid-1"},
}


def launch(node: str = "make[2]", **options: Any) -> StepLaunch:
    env = {"MODELYARD_API_KEY": "key-secret", "MODE": "fast"}
    return StepLaunch("0123456789abcdef" * 2, node, 2, TASK, env, namespace="team", **options)


def job(attempt: StepLaunch, **options: Any) -> dict[str, Any]:
    return steps.job(attempt, "make-2-run", "team", "ml-team", image="img:1", **options)


def test_a_job_runs_the_runner_once_and_leaves_retries_and_deadlines_to_the_executor() -> None:
    manifest = job(launch(memory_mb=512, cpu=0.5), service_account="steps")
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0 and "activeDeadlineSeconds" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "steps"
    assert pod["terminationGracePeriodSeconds"] == 30
    (container,) = pod["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "modelyard.pipelines.runner",
        "/var/run/modelyard/task/task.json",
    ]
    assert container["workingDir"] == steps.WORK_DIR
    assert container["terminationMessagePath"] == f"{steps.WORK_DIR}/result.json"
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"memory": "512Mi"},
    }
    labels = spec["template"]["metadata"]["labels"]
    assert labels == manifest["metadata"]["labels"]
    assert labels[steps.RUN_LABEL] == "0123456789abcdef" * 2
    assert (labels[steps.NODE_LABEL], labels[steps.ATTEMPT_LABEL]) == ("make-2", "2")
    assert manifest["metadata"]["annotations"]["modelyard.io/node"] == "make[2]"
    assert "resources" not in job(launch())["spec"]["template"]["spec"]["containers"][0]


def test_the_task_and_the_environment_are_in_the_secret_never_the_job() -> None:
    attempt = launch()
    manifest = job(attempt)
    text = json.dumps(manifest)
    assert "key-secret" not in text and "blob-secret" not in text and "fast" not in text
    env = manifest["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[1:] == [
        {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": "make-2-run", "key": f"env.{name}"}},
        }
        for name in ("MODE", "MODELYARD_API_KEY")
    ]
    secret = steps.secret(attempt, "make-2-run", "team", "ml-team", OWNER)
    assert json.loads(secret["stringData"]["task.json"]) == TASK
    assert secret["stringData"]["env.MODELYARD_API_KEY"] == "key-secret"
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("Job", "uid-1")


def test_job_names_are_dns_labels_unique_per_attempt() -> None:
    for node in ("make[2]", "A_Very_Long_Node_Name_With_Underscores" * 3, "___"):
        name = steps.job_name(launch(node))
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 52, name
    assert steps.job_name(launch()) != steps.job_name(launch())


def test_job_and_secret_are_valid_for_kubernetes() -> None:
    attempt = launch(memory_mb=256, cpu=1.0)
    schemas.check(job(attempt, service_account="steps", image_pull_policy="Always"))
    schemas.check(job(launch()))
    schemas.check(steps.secret(attempt, "make-2-run", "team", "ml-team", OWNER))


def test_a_step_that_names_its_own_image_gets_the_runner_from_an_init_container() -> None:
    manifest = job(launch(image="python:3.12-slim", memory_mb=256))
    schemas.check(manifest)
    pod = manifest["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (container,) = pod["containers"]
    assert init["image"] == "img:1" and container["image"] == "python:3.12-slim"
    assert init["command"] + init["args"] == [
        "python",
        "-m",
        "modelyard.pipelines.runner_bundle",
        steps.RUNNER_DIR,
        "s3",  # the blob store's filesystem, which the runner needs too
    ]
    assert container["command"] == [
        "python3",
        f"{steps.RUNNER_DIR}/launch.py",
        "/var/run/modelyard/task/task.json",
    ]
    shared = {"name": "runner", "emptyDir": {}}
    assert shared in pod["volumes"]
    assert init["volumeMounts"] == [{"name": "runner", "mountPath": steps.RUNNER_DIR}]
    assert {"name": "runner", "mountPath": steps.RUNNER_DIR, "readOnly": True} in container[
        "volumeMounts"
    ]
    assert container["resources"]["limits"] == {"memory": "256Mi"}
    # the platform's own image needs nothing brought in
    assert "initContainers" not in job(launch(image="img:1"))["spec"]["template"]["spec"]


def terminated(code: int, reason: str, message: str = "") -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "reason": reason, "message": message}}
    return {
        "metadata": {"name": "make-2-run-x1"},
        "status": {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": "step", "state": state}],
        },
    }


def test_how_an_attempt_ended_from_its_pod() -> None:
    result = {"result": 3, "artifacts": {}}
    assert steps.ended(terminated(0, "Completed", json.dumps(result))) == (0, result)
    failed = {"error": "RuntimeError: no table"}
    assert steps.ended(terminated(1, "Error", json.dumps(failed))) == (1, failed)
    code, oom = steps.ended(terminated(137, "OOMKilled")) or (0, {})
    assert code == 137 and oom["error"].startswith("OOMKilled")
    code, cut = steps.ended(terminated(0, "Completed", '{"result": "' + "x" * 5000)) or (0, {})
    assert code == 1 and "4096 bytes" in cut["error"]
    start_error = terminated(128, "StartError", 'exec: "python": executable file not found')
    assert steps.ended(start_error) == (
        128,
        {"error": 'StartError (exit code 128): exec: "python": executable file not found'},
    )
    no_runner = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Failed",
            "initContainerStatuses": [
                {
                    "name": "runner",
                    "state": {
                        "terminated": {"exitCode": 1, "reason": "Error", "message": "No space"}
                    },
                }
            ],
            "containerStatuses": [{"name": "step", "state": {"waiting": {}}}],
        },
    }
    assert steps.ended(no_runner) == (
        1,
        {"error": "pod p, init container runner: Error (exit code 1): No space"},
    )
    evicted = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "reason": "Evicted"}}
    assert steps.ended(evicted) == (1, {"error": "pod p failed: Evicted"})
    assert steps.ended({"metadata": {"name": "p"}, "status": {"phase": "Running"}}) is None


def test_a_pod_that_cannot_run_ends_the_attempt_with_kubernetes_reason() -> None:
    waiting = {"waiting": {"reason": "ImagePullBackOff", "message": 'pulling "img:9"'}}
    pulling = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"name": "step", "state": waiting}],
        },
    }
    code, result = steps.ended(pulling) or (0, {})
    assert code == 1 and "ImagePullBackOff" in result["error"]
    since = "2026-01-01T00:00:00Z"
    unschedulable = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient memory.",
                    "lastTransitionTime": since,
                }
            ],
        },
    }
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert pods.unschedulable_since(unschedulable) == start
    assert steps.ended(unschedulable, start + dt.timedelta(minutes=1)) is None
    code, result = steps.ended(unschedulable, start + dt.timedelta(minutes=11)) or (0, {})
    assert code == 1 and "Unschedulable" in result["error"] and "memory" in result["error"]
