from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelyard.kube.api import KubeApi
from modelyard.kube.config import Cluster, KubernetesSettings
from modelyard.kube.orchestrator import KubeOrchestrator
from tests.kube.fake_apiserver import FakeApiServer


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer(namespaces=("default", "ml-team")).start()
    yield server
    server.stop()


@pytest.fixture
def orchestrator(apiserver: FakeApiServer) -> Iterator[KubeOrchestrator]:
    settings = KubernetesSettings(namespaces={"team": "ml-team"}, image="img:1")
    orch = KubeOrchestrator(settings, KubeApi(Cluster(apiserver.url), "modelyard"))
    orch.env_for = lambda revision: {"MODELYARD_URL": "http://api:8700", "MODELYARD_API_KEY": "k"}
    orch.start()
    yield orch
    orch.stop()
