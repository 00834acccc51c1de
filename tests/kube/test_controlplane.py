"""A control plane with ``orchestrator = "kubernetes"`` against the fake API server: a deployment
created through the API becomes Kubernetes objects, gets ready from the pod watch, and deleting it
removes everything."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.errors import ConfigError
from modelyard.kube.orchestrator import KubeOrchestrator
from modelyard.registry.records import VersionSpec
from modelyard.serving.local import LocalOrchestrator
from modelyard.serving.orchestrator import load_orchestrator, orchestrator_names
from modelyard.serving.records import DeploymentSpec, SpecPatch
from modelyard.serving.replica_headers import TOKEN_ENV
from modelyard.settings import Settings
from modelyard.store.schema import RevisionRow
from modelyard.testing import wait_for
from tests.conftest import iris_model
from tests.kube.fake_apiserver import FakeApiServer


def test_orchestrators_by_name(tmp_path: Path, apiserver: FakeApiServer) -> None:
    settings = Settings(home=tmp_path, kubernetes={"api_url": apiserver.url})
    assert isinstance(load_orchestrator("local", settings), LocalOrchestrator)
    assert isinstance(load_orchestrator("kubernetes", settings), KubeOrchestrator)
    target = "modelyard.kube.orchestrator:KubeOrchestrator"
    assert isinstance(load_orchestrator(target, settings), KubeOrchestrator)
    assert orchestrator_names()[:2] == ["kubernetes", "local"]
    with pytest.raises(ConfigError, match="use one of kubernetes, local"):
        load_orchestrator("nomad", settings)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_orchestrator("no.such.module:Thing", settings)
    with pytest.raises(ConfigError, match="from_settings"):
        load_orchestrator("modelyard.settings:Settings", settings)


def test_a_kubeconfig_that_does_not_work_says_so(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, kubernetes={"kubeconfig": tmp_path / "missing"})
    with pytest.raises(ConfigError, match="kubeconfig"):
        load_orchestrator("kubernetes", settings)


@pytest.fixture
def kube_plane(tmp_path: Path, apiserver: FakeApiServer) -> Iterator[ControlPlane]:
    settings = Settings(
        home=tmp_path / "home",
        api_port=0,
        orchestrator="kubernetes",
        kubernetes={
            "api_url": apiserver.url,
            "namespaces": {"team": "ml-team"},
            "control_plane_url": "http://modelyard-api.modelyard:8700",
        },
    )
    plane = ControlPlane.build(settings)
    yield plane
    plane.close()


def test_a_deployment_runs_as_kubernetes_objects(
    kube_plane: ControlPlane, apiserver: FakeApiServer, tmp_path: Path
) -> None:
    kube_plane.ensure_admin_key()
    token = kube_plane.settings.admin_key_path.read_text().strip()
    with (
        BackgroundServer(kube_plane) as server,
        Client(server.url, token, cache_dir=tmp_path / "cache") as admin,
    ):
        admin.create_namespace("team")
        admin.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
        admin.create_deployment("team", "iris", "iris@latest")
        wait_for(lambda: admin.get_deployment("team", "iris").ready, what="the deployment ready")
        info = admin.get_deployment("team", "iris")
        (replica,) = info.revisions[0].replicas
        assert replica.url.startswith("http://10.0.") and replica.pid is None
        deployment = apiserver.get("deployments", "ml-team", "iris-r1")
        assert deployment is not None
        server_env = {
            e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert server_env["MODELYARD_URL"]["value"] == "http://modelyard-api.modelyard:8700"
        secret = apiserver.get("secrets", "ml-team", "iris-r1")
        assert secret is not None
        assert len(base64.b64decode(secret["data"][TOKEN_ENV])) == 64
        admin.delete_deployment("team", "iris")
        wait_for(
            lambda: all(
                apiserver.list(p, "ml-team") == []
                for p in ("deployments", "secrets", "configmaps", "pods")
            ),
            what="every object of the deployment gone",
        )


def test_specs_stored_before_the_scheduling_fields_make_no_new_revision(
    plane: ControlPlane, admin: Client, tmp_path: Path
) -> None:
    """node_selector, tolerations and gpu came with Kubernetes: a revision stored without them
    is the same spec, not a change."""
    admin.create_namespace("team")
    admin.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    plane.deployments.create("team", "iris", DeploymentSpec(model="iris@latest"))
    with plane.db.write() as session:
        row = session.scalars(sa.select(RevisionRow)).one()
        old = dict(row.spec)
        del old["node_selector"], old["tolerations"]
        old["resources"] = {k: v for k, v in old["resources"].items() if k != "gpu"}
        row.spec = old
    again = plane.deployments.update("team", "iris", SpecPatch(timeout_s=60.0))
    assert [r.number for r in again.revisions] == [1]
