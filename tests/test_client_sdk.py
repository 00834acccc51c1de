"""The SDK as a user's program sees it: what importing it loads, and what its methods document."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from modelyard.client import Client
from modelyard.realtime.sdk import RealtimeClient, Stream

# The server's side: the database layer, numpy (the canary judge, runtimes) and the services.
SERVER_PACKAGES = ("sqlalchemy", "alembic", "fastapi", "numpy", "pyarrow")
SERVER_MODULES = (
    "modelyard.api",
    "modelyard.auth.keys",
    "modelyard.controlplane",
    "modelyard.delivery.analysis",
    "modelyard.delivery.rollout",
    "modelyard.delivery.slo",
    "modelyard.events.log",
    "modelyard.events.webhooks",
    "modelyard.gateway.app",
    "modelyard.pipelines.executor",
    "modelyard.pipelines.runs",
    "modelyard.pipelines.schedules",
    "modelyard.realtime.catalog",
    "modelyard.registry.versions",
    "modelyard.serving.controller",
    "modelyard.serving.deployments",
    "modelyard.store",
    "modelyard.ui",
)


def _loaded_by(code: str) -> list[str]:
    probe = f"{code}; import sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def _server_side(loaded: list[str]) -> list[str]:
    def under(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    return [
        name for name in loaded if any(under(name, p) for p in (*SERVER_PACKAGES, *SERVER_MODULES))
    ]


@pytest.mark.parametrize(
    "code",
    [
        "import modelyard.client",
        "from modelyard import Client, VersionSpec, step, pipeline, Input, Output",
        "from modelyard import DeploymentInfo, Event, KeyInfo, RolloutInfo, RunInfo, ScheduleSpec",
        "from modelyard.pipelines import Dataset, Model, step, pipeline",
        "from modelyard.realtime import History, Prediction",
        "from modelyard.realtime.sdk import RealtimeClient, Stream",  # client.realtime
    ],
)
def test_the_sdk_imports_no_server_code(code: str) -> None:
    assert _server_side(_loaded_by(code)) == []


def _public_methods(cls: type) -> list[tuple[str, Callable[..., Any]]]:
    found: dict[str, Callable[..., Any]] = {}
    # Client is its areas' mixins combined (modelyard.client.*): their methods are its own.
    owners = [c for c in cls.__mro__ if c.__module__.startswith("modelyard.")]
    for owner in owners:
        for name, member in vars(owner).items():
            if name.startswith("_") or name in found:
                continue
            if isinstance(member, property):
                member = member.fget
            elif hasattr(member, "func"):  # functools.cached_property
                member = member.func
            if callable(member):
                found[name] = member
    return [(f"{cls.__name__}.{name}", member) for name, member in found.items()]


def test_the_check_sees_the_methods_of_every_mixin() -> None:
    names = {name for name, _ in _public_methods(Client)}
    assert {"Client.request", "Client.push", "Client.wait_run", "Client.slo_rules"} <= names


@pytest.mark.parametrize("cls", [Client, RealtimeClient, Stream])
def test_every_public_method_documents_an_example(cls: type) -> None:
    methods = _public_methods(cls)
    assert methods, f"{cls.__name__} has no public method"
    missing = [
        name
        for name, method in methods
        if not any(mark in (inspect.getdoc(method) or "") for mark in (">>>", "Example:"))
    ]
    assert missing == [], f"no docstring with an example (>>> or Example:): {missing}"
