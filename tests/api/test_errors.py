"""Bad input gets a clear JSON error with the right status, and changes nothing stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", api_port=0, max_body_mb=1)


@pytest.fixture
def http(admin: Client) -> Iterator[httpx.Client]:
    admin.create_namespace("team")
    yield admin.http


def error(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    return dict(body["error"])


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/namespaces", content=b'{"name": "x",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert error(response)["code"] == "malformed_json"


def test_wrong_types_are_422_naming_the_field(http: httpx.Client) -> None:
    response = http.post("/namespaces/team/models/m/versions", json={"metrics": {"acc": "high"}})
    assert response.status_code == 422
    assert "metrics" in error(response)["message"]
    response = http.post("/namespaces/team/models/m/versions", json={"unknown": 1})
    assert response.status_code == 422


def test_bodies_over_the_limit_are_413(http: httpx.Client, plane: ControlPlane) -> None:
    draft = http.post("/namespaces/team/models/m/versions", json={}).json()
    too_big = b"x" * (1024 * 1024 + 1)
    response = http.put(
        f"/namespaces/team/models/m/drafts/{draft['id']}/files/big.bin", content=too_big
    )
    assert response.status_code == 413
    assert "upload" in error(response)["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(5):
            yield b"y" * 300_000

    response = http.put(
        f"/namespaces/team/models/m/drafts/{draft['id']}/files/big.bin", content=chunked()
    )
    assert response.status_code == 413
    assert plane.blobs.staged_drafts() == []


@pytest.mark.parametrize("path", ["%2E%2E/escape.bin", "a/%2E%2E/%2E%2E/b", "a//b", "%00x"])
def test_file_paths_cannot_escape_the_version(
    http: httpx.Client, plane: ControlPlane, path: str
) -> None:
    draft = http.post("/namespaces/team/models/m/versions", json={}).json()
    response = http.put(
        f"/namespaces/team/models/m/drafts/{draft['id']}/files/{path}", content=b"x"
    )
    assert response.status_code in (404, 422), response.text
    assert not (plane.settings.home / "blobs" / "escape.bin").exists()
    assert plane.blobs.staged_drafts() == []


@pytest.mark.parametrize("name", ["..", "a" * 64, "Name", "x_y", "-x"])
def test_bad_names_are_refused_everywhere(http: httpx.Client, name: str) -> None:
    for response in (
        http.post("/namespaces", json={"name": name}),
        http.post(f"/namespaces/team/models/{name}/versions", json={}),
        http.post(f"/namespaces/team/datasets/{name}/versions", json={}),
    ):
        assert response.status_code in (404, 422), response.text
        if response.status_code == 422:
            assert "lowercase" in error(response)["message"]
    assert http.get("/namespaces/team/models").json() == []
    assert [n["name"] for n in http.get("/namespaces").json()] == ["team"]


def test_unknown_routes_and_methods_answer_json(
    http: httpx.Client, server: BackgroundServer
) -> None:
    assert error(http.get("/nothing-here"))["code"] == "not_found"
    assert http.delete("/namespaces").status_code == 405
    assert httpx.get(f"{server.url}/api/v1/openapi.json").json()["info"]["title"]
