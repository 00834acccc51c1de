"""Keys, roles and namespace isolation, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated


@pytest.fixture
def teams(admin: Client, tmp_path: Path) -> Client:
    for ns in ("alpha", "beta"):
        admin.create_namespace(ns)
        (tmp_path / f"{ns}.bin").write_bytes(ns.encode())
        admin.push(f"{ns}/secret-model-{ns}", tmp_path / f"{ns}.bin")
    return admin


_clients: list[Client] = []  # the keys' clients, closed after each test


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def opened(client: Client) -> Client:
    _clients.append(client)
    return client


def key(admin: Client, roles: dict[str, str], tmp_path: Path) -> Client:
    _, token = admin.create_key("k", dict(roles))
    return opened(Client(admin.url, token, cache_dir=tmp_path / "cache-k"))


def test_a_key_of_one_namespace_cannot_see_or_change_another(teams: Client, tmp_path: Path) -> None:
    alpha = key(teams, {"alpha": "editor"}, tmp_path)
    assert [n.name for n in alpha.list_namespaces()] == ["alpha"]
    assert [m.name for m in alpha.list_artifacts("alpha")] == ["secret-model-alpha"]

    responses = [
        alpha.http.get("/namespaces/beta"),
        alpha.http.get("/namespaces/beta/models"),
        alpha.http.get("/namespaces/beta/models/secret-model-beta/versions/1"),
        alpha.http.get("/namespaces/beta/models/no-such-model/versions/1"),
        alpha.http.get("/namespaces/no-such-namespace/models"),
        alpha.http.post("/namespaces/beta/models/x/versions", json={}),
        alpha.http.put(
            "/namespaces/beta/models/secret-model-beta/aliases/prod", json={"version": 1}
        ),
    ]
    assert {r.status_code for r in responses} == {403}
    # Existing and missing objects of another namespace answer alike: nothing leaks.
    assert responses[2].json() == responses[3].json()
    assert responses[0].json() != responses[4].json()  # names the namespace asked for, only
    assert all("secret-model-beta" not in r.text for r in responses)
    events = list(alpha.events(after=0, follow=False))
    assert events and all(e.namespace == "alpha" for e in events)
    assert teams.list_versions("beta/secret-model-beta")[0].aliases == []


def test_roles_limit_what_a_key_may_do(teams: Client, tmp_path: Path) -> None:
    (tmp_path / "new.bin").write_bytes(b"new")
    viewer = key(teams, {"alpha": "viewer"}, tmp_path)
    assert viewer.get_version("alpha/secret-model-alpha@1").number == 1
    with pytest.raises(Forbidden, match="editor"):
        viewer.push("alpha/other", tmp_path / "new.bin")

    invoker = key(teams, {"alpha": "invoker"}, tmp_path)
    with pytest.raises(Forbidden, match="viewer"):
        invoker.get_version("alpha/secret-model-alpha@1")

    editor = key(teams, {"alpha": "editor"}, tmp_path)
    assert editor.push("alpha/other", tmp_path / "new.bin").number == 1
    with pytest.raises(Forbidden):
        editor.create_key("sneaky", {"alpha": "admin"})
    with pytest.raises(Forbidden):
        editor.create_namespace("gamma")

    ns_admin = key(teams, {"alpha": "admin"}, tmp_path)
    _, token = ns_admin.create_key("deployer", {"alpha": "editor"})
    assert token.startswith("my_")
    with pytest.raises(Forbidden):
        ns_admin.create_key("intruder", {"beta": "viewer"})
    with pytest.raises(Forbidden):
        ns_admin.create_key("root2", admin=True)
    assert {k.name for k in ns_admin.list_keys()} <= {"k", "deployer"}


def test_unknown_malformed_and_revoked_keys_get_401(teams: Client, tmp_path: Path) -> None:
    info, token = teams.create_key("temp", {"alpha": "viewer"})
    for bad in ("my_000000000000_nope", "garbage", token + "x"):
        response = httpx.get(
            f"{teams.url}/api/v1/namespaces", headers={"Authorization": f"Bearer {bad}"}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
    assert httpx.get(f"{teams.url}/api/v1/namespaces").status_code == 401
    assert httpx.get(f"{teams.url}/api/v1/health").status_code == 200

    client = opened(Client(teams.url, token))
    assert client.list_namespaces()[0].name == "alpha"
    teams.revoke_key(info.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        client.list_namespaces()
    with pytest.raises(Conflict):
        teams.revoke_key(info.id)


def test_keys_are_stored_hashed(teams: Client, server: BackgroundServer) -> None:
    _, token = teams.create_key("hashed", {"alpha": "viewer"})
    secret = token.split("_", 2)[2].encode()
    stored = server.plane.settings.home.glob("modelyard.db*")
    assert all(secret not in path.read_bytes() for path in stored)


def test_admin_sees_404_for_missing_namespace_and_bad_names_get_422(teams: Client) -> None:
    with pytest.raises(NotFound):
        teams.request("GET", "/namespaces/nowhere/models")
    for bad in ("UPPER", "-dash", "a" * 64, "under_score", "dot.name"):
        with pytest.raises(InvalidInput):
            teams.create_namespace(bad)
    assert [n.name for n in teams.list_namespaces()] == ["alpha", "beta"]
