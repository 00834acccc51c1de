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


def test_an_integer_past_64_bits_in_a_prediction_event_is_422(http: httpx.Client) -> None:
    """JSON allows it, the event store cannot write it: refused as bad input, never a 500 (the
    OpenAPI fuzzer found this)."""
    event: dict[str, object] = {"deployment": "team/scorer", "entity": "u1", "model": None}
    event |= {"event_id": "e1"}
    event |= {"event_time": 1.0, "written_at": 1.0, "value": {"n": 2**70}}
    response = http.post(
        "/namespaces/team/realtime/scorer/prediction-events", json={"events": [event]}
    )
    assert response.status_code == 422
    assert "64-bit" in error(response)["message"]


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


def _draft(http: httpx.Client) -> str:
    return str(http.post("/namespaces/team/models/m/versions", json={}).json()["id"])


@pytest.mark.parametrize("ref", ["1000000000000000000000000000000", "²", "0", "٣"])
def test_odd_version_numbers_are_not_found(http: httpx.Client, ref: str) -> None:
    assert http.get(f"/namespaces/team/models/m/versions/{ref}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/namespaces/team/webhooks", {"url": "\u0004", "events": ["*"]}),
        ("POST", "/namespaces/team/webhooks", {"url": "http://[::1", "events": ["*"]}),
        ("POST", "/namespaces/team/models/m/versions", {"description": "a\u0000b"}),
        ("POST", "/namespaces/team/models/m/versions", {"tags": {"k": "\u0000"}}),
        ("POST", "/namespaces", {"name": "ok-name", "description": "\u0000"}),
        ("PUT", "/namespaces/team/models/m/aliases/prod", {"version": 10**30}),
        ("GET", "/events?after=1000000000000000000000000000000&follow=false", None),
    ],
)
def test_out_of_range_and_unprintable_input_is_422(
    http: httpx.Client, method: str, path: str, body: object
) -> None:
    response = http.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert http.get("/namespaces/team/models").json() == []


def test_non_finite_metrics_are_refused(http: httpx.Client) -> None:
    response = http.post(
        "/namespaces/team/models/m/versions",
        content=b'{"metrics": {"acc": NaN}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text


def test_declared_sizes_are_checked_even_for_content_already_stored(http: httpx.Client) -> None:
    first = _draft(http)
    entry = http.put(f"/namespaces/team/models/m/drafts/{first}/files/a.bin", content=b"seven!!")
    http.post(f"/namespaces/team/models/m/drafts/{first}/commit", json={"files": [entry.json()]})
    second = _draft(http)
    lying = {**entry.json(), "size": 5}
    response = http.post(
        f"/namespaces/team/models/m/drafts/{second}/commit", json={"files": [lying]}
    )
    assert response.status_code == 422 and "a.bin" in response.text
    huge = {**entry.json(), "size": 10**30}
    response = http.post(
        f"/namespaces/team/models/m/drafts/{second}/commit", json={"files": [huge]}
    )
    assert response.status_code == 422
    assert [v["number"] for v in http.get("/namespaces/team/models/m/versions").json()] == [1]


def test_file_and_folder_clashes_and_long_segments(http: httpx.Client) -> None:
    draft = _draft(http)
    base = f"/namespaces/team/models/m/drafts/{draft}/files"
    assert http.put(f"{base}/{'x' * 300}", content=b"x").status_code == 422
    assert http.put(f"{base}/a", content=b"x").status_code == 200
    assert http.put(f"{base}/a/b", content=b"x").status_code == 409
    assert http.put(f"{base}/c/d", content=b"x").status_code == 200
    assert http.put(f"{base}/c", content=b"x").status_code == 409
    files = [{"path": p, "sha256": "a" * 64, "size": 1} for p in ("c", "c/d")]
    response = http.post(f"/namespaces/team/models/m/drafts/{draft}/commit", json={"files": files})
    assert response.status_code == 422 and "folder" in response.text
