"""Property-based fuzzing of the whole control plane API from its own OpenAPI document.

Schemathesis generates requests for every operation (valid ones and invalid ones) against the real
server on a free port. Whatever the input, the API must answer with a client error at worst, never
a 5xx, and whatever it answers must match the schema it publishes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.registry.versions import VersionSpec
from tests.conftest import free_port

EVENTS = "/api/v1/events"
MAX_EXAMPLES = 40


class Seeded:
    """Objects created before fuzzing, so that generated paths also land on things that exist."""

    def __init__(self, client: Client, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.bin").write_bytes(b"weights")
        client.create_namespace("fuzz", "what the fuzzer runs in")
        spec = VersionSpec(runtime="sklearn", metrics={"acc": 0.9}, tags={"team": "fuzz"})
        client.push("fuzz/seeded", folder, spec, alias="production")
        client.push("fuzz/seeded", folder, spec, kind="dataset", alias="production")
        drafts = [
            client.request("POST", f"/namespaces/fuzz/{kind}s/seeded/versions", json={})["id"]
            for kind in ("model", "dataset")
        ]
        # A webhook on a port nobody listens on: deliveries of fuzzed events fail fast, locally.
        hook, _ = client.create_webhook("fuzz", f"http://127.0.0.1:{free_port()}/hook")
        # A key the fuzzer may revoke; the admin key's id is never offered, so the run keeps it.
        victim, _ = client.create_key("victim", {"fuzz": "viewer"})
        self.path_values: dict[str, list[str]] = {
            "namespace": ["fuzz"],
            "name": ["seeded"],
            "ref": ["1", "latest", "production"],
            "path": ["model.bin"],
            "draft_id": drafts,
            "alias": ["production"],
            "webhook_id": [hook.id],
            "key_id": [victim.id],
        }

    def aim(self, params: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        """Each path parameter is either what the fuzzer generated or a seeded object's name."""
        if not isinstance(params, dict):
            return st.just(params)
        return st.fixed_dictionaries(
            {
                key: st.sampled_from(self.path_values[key]) | st.just(value)
                if key in self.path_values
                else st.just(value)
                for key, value in params.items()
            }
        )


def fuzz_config(headers: dict[str, str]) -> SchemathesisConfig:
    config = SchemathesisConfig.from_dict(
        {
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
        }
    )
    config.projects.default.update(headers=headers)
    return config


@pytest.fixture
def fuzz_server(plane: ControlPlane, tmp_path: Path) -> Iterator[BackgroundServer]:
    token = plane.ensure_admin_key()
    assert token is not None
    with BackgroundServer(plane) as running:
        yield running


@pytest.fixture
def admin_token(fuzz_server: BackgroundServer) -> str:
    return fuzz_server.plane.settings.admin_key_path.read_text().strip()


@pytest.fixture
def api_schema(fuzz_server: BackgroundServer, admin_token: str, tmp_path: Path, request: pytest.FixtureRequest) -> BaseSchema:
    request.node._nodeid = request.node.nodeid
    with Client(fuzz_server.url, admin_token, cache_dir=tmp_path / "cache") as client:
        seeded = Seeded(client, tmp_path / "seed")
    config = fuzz_config({"Authorization": f"Bearer {admin_token}"})
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/api/v1/openapi.json", config=config)
    schema.config.update(base_url=fuzz_server.url)

    @schema.hook
    def before_generate_path_parameters(
        context: schemathesis.HookContext, strategy: st.SearchStrategy[dict[str, Any]]
    ) -> st.SearchStrategy[dict[str, Any]]:
        return strategy.flatmap(seeded.aim)

    return schema


@pytest.fixture
def anonymous_schema(fuzz_server: BackgroundServer) -> BaseSchema:
    schema = schemathesis.openapi.from_url(
        f"{fuzz_server.url}/api/v1/openapi.json", config=fuzz_config({})
    )
    schema.config.update(base_url=fuzz_server.url)
    return schema


fuzzed = schemathesis.pytest.from_fixture("api_schema").exclude(path=EVENTS)


@fuzzed.parametrize()
def test_no_operation_answers_a_server_error_or_breaks_its_schema(case: Case) -> None:
    response = case.call(timeout=10)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
