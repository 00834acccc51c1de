"""What a replica runs, in one place for every orchestrator: its module and arguments, chosen by
the revision's workload kind, and its environment.

A local replica is forked from the launcher into the module's ``run_forked`` with these
arguments; a Kubernetes pod runs ``python -m <module>`` with the same ones. The environment is the
control plane's (how to reach the repository) under the deployment's own ``env``, and the
revision's token last, so that no ``spec.env`` can replace it. ``SECRET_ENV`` names the variables
that must never appear in a manifest or on a command line (Kubernetes takes them from a Secret).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from modelyard.serving.deployments import Revision
from modelyard.serving.replica_headers import TOKEN_ENV
from modelyard.serving.states import Workload

SERVER_MODULE = "modelyard.serving.server"
WORKER_MODULE = "modelyard.realtime.worker"
SECRET_ENV = frozenset({TOKEN_ENV, "MODELYARD_API_KEY"})


def server_args(revision: Revision) -> list[str]:
    """The model server's arguments for ``revision`` (where it listens is the caller's)."""
    spec = revision.spec
    args = [
        "--model",
        revision.model,
        "--name",
        revision.deployment,
        "--max-body-mb",
        str(spec.max_body_mb),
    ]
    if spec.batching is not None:
        args += [
            "--max-batch-size",
            str(spec.batching.max_batch_size),
            "--max-wait-ms",
            str(spec.batching.max_wait_ms),
        ]
    return args


def worker_args(revision: Revision) -> list[str]:
    """The realtime worker's arguments for ``revision``: the deployment and the revision's
    number (which tells it its role: `modelyard.realtime.shadow`), its pinned model version
    (none: the function gets no model) and the revision's ``realtime`` section; the worker reads
    nothing else of the deployment (where its health endpoint listens is the caller's)."""
    realtime = revision.spec.realtime
    assert realtime is not None, "a realtime revision"
    args = ["--deployment", f"{revision.namespace}/{revision.deployment}"]
    args += ["--revision", str(revision.number)]
    if revision.model:
        args += ["--model", revision.model]
    return [*args, "--spec", realtime.model_dump_json()]


WORKLOADS: dict[Workload, tuple[str, Callable[[Revision], list[str]]]] = {
    Workload.MODEL_SERVER: (SERVER_MODULE, server_args),
    Workload.REALTIME_WORKER: (WORKER_MODULE, worker_args),
}
"""Each workload kind's module and the arguments it takes for a revision."""


def replica_command(revision: Revision) -> tuple[str, list[str]]:
    """The module ``revision``'s replicas run and its arguments."""
    module, arguments = WORKLOADS[revision.workload]
    return module, arguments(revision)


def replica_environment(revision: Revision, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (the control plane's ``replica_env``), then ``spec.env``, then the token."""
    return {**base, **revision.spec.env, TOKEN_ENV: revision.token}
