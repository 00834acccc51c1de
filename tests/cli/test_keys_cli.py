"""Keys through the CLI: expiry (API and gateway), revoking by name."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import pytest

from modelyard.api.server import BackgroundServer
from modelyard.controlplane import ControlPlane
from modelyard.errors import InvalidInput, Unauthenticated
from modelyard.gateway.routes import Table
from modelyard.settings import Settings
from tests.cli.conftest import Cli


class Shifted:
    """The wall clock, moved forward by ``offset``: a key's expiry comes without waiting."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


@pytest.fixture
def clock() -> Shifted:
    return Shifted()


@pytest.fixture
def plane(settings: Settings, clock: Shifted) -> Iterator[ControlPlane]:
    cp = ControlPlane.build(settings, clock=clock)
    yield cp
    cp.close()


def token_of(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_keys_expire_for_the_api_and_the_gateway(
    cli: Cli, server: BackgroundServer, clock: Shifted
) -> None:
    cli("namespaces", "create", "team")
    created = cli("keys", "create", "ci-bot", "--role", "team=viewer", "--expires", "30d")
    token = token_of(created)
    bot = next(k for k in json.loads(cli("keys", "list", "--json")) if k["name"] == "ci-bot")
    expires = dt.datetime.fromisoformat(bot["expires_at"])
    in_30_days = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    assert abs(expires - in_30_days) < dt.timedelta(minutes=1)
    assert f"created key ci-bot ({bot['id']}, expires {expires:%Y-%m-%d %H:%M} UTC)" in created
    assert f"{expires:%Y-%m-%d %H:%M}" in cli("keys", "list")
    cli("--api-key", token, "models", "list", "team")  # valid now

    # the API: a key not used since is refused once its time has come
    later = token_of(cli("keys", "create", "later", "--role", "team=viewer", "--expires", "1h"))
    clock.offset = dt.timedelta(hours=2)
    refused = cli.fail("--api-key", later, "models", "list", "team")
    assert refused.exit_code == Unauthenticated.exit_code
    assert "expired at" in refused.stderr and "ask an admin for a new one" in refused.stderr
    clock.offset = dt.timedelta()

    # the gateway: the routing table carries the expiry, and Table.authorize checks it
    table = {"keys": server.plane.keys.data_plane_table()}
    assert table["keys"][bot["id"]]["expires"] == pytest.approx(expires.timestamp())
    assert Table.parse(table, {}).authorize(token, "team") is None
    table["keys"][bot["id"]]["expires"] = time.time() - 1
    assert Table.parse(table, {}).authorize(token, "team") == (
        401,
        f"API key {bot['id']} expired: ask an admin for a new one",
    )
    admin = next(k for k, v in table["keys"].items() if v["admin"])
    assert table["keys"][admin]["expires"] is None  # keys without an expiry never expire

    for expiry, message in [
        ("2020-01-31", "which has passed"),
        ("soon", "--expires 'soon': write a duration (30d, 12h, 90m, 2w) or a date"),
    ]:
        bad = cli.fail("keys", "create", "old", "--role", "team=viewer", "--expires", expiry)
        assert bad.exit_code == InvalidInput.exit_code and message in bad.stderr


def test_keys_are_revoked_by_name(cli: Cli) -> None:
    cli("namespaces", "create", "team")
    token = token_of(cli("keys", "create", "ci-bot", "--role", "team=viewer"))
    assert cli("keys", "revoke", "ci-bot").startswith("revoked key ci-bot (")
    refused = cli.fail("--api-key", token, "models", "list", "team")
    assert refused.exit_code == Unauthenticated.exit_code and "was revoked" in refused.stderr
    # a second key of that name later: the name is unique among live keys again
    cli("keys", "create", "ci-bot", "--role", "team=viewer")
    cli("keys", "create", "twin", "--role", "team=viewer")
    cli("keys", "create", "twin", "--role", "team=viewer")
    ambiguous = cli.fail("keys", "revoke", "twin")
    assert ambiguous.exit_code == InvalidInput.exit_code
    assert "2 keys are named 'twin'" in ambiguous.stderr
    assert "revoked key ci-bot" in cli("keys", "revoke", "ci-bot")
    assert "does not exist" in cli.fail("keys", "revoke", "nobody").stderr
