"""The warehouse password is read where its connection says, and nowhere written: not in a
version, an event, a run log, an error message, the metadata database, the blob store or
``modelyard config``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from typer.testing import CliRunner

from modelyard.cli.main import app
from modelyard.client import Client
from modelyard.errors import InvalidInput, Unauthenticated
from modelyard.settings import Settings
from modelyard.sql.source import SqlSource
from tests.sql import flows
from tests.sql.conftest import BOUNCER_PASSWORD, connect
from tests.sql.poolers import Pooler


@pytest.fixture
def settings(
    tmp_path: Path, pg_url: str, pgbouncer: Pooler, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The control plane's connection to pgbouncer, its password in the environment (which the
    control plane's pipeline steps inherit)."""
    monkeypatch.setenv("WAREHOUSE_PASSWORD", BOUNCER_PASSWORD)
    database = urlsplit(pg_url).path.lstrip("/")
    return Settings(
        home=tmp_path / "home",
        api_port=0,
        connections={
            "bouncer": {"url": pgbouncer.url(database), "password_env": "WAREHOUSE_PASSWORD"}
        },
    )


def traces(root: Path, skip: set[Path]) -> list[str]:
    """Every file under ``root`` that holds the password, in any common spelling."""
    forms = {BOUNCER_PASSWORD, quote(BOUNCER_PASSWORD, safe="")}
    found = []
    for path in root.rglob("*"):
        if path.is_file() and path not in skip:
            data = path.read_bytes()
            if any(form.encode() in data for form in forms):
                found.append(str(path.relative_to(root)))
    return found


def test_no_credential_anywhere(
    client: Client, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = settings.connections["bouncer"].url
    secret_file = tmp_path / "secrets" / "warehouse"
    secret_file.parent.mkdir()
    secret_file.write_text(BOUNCER_PASSWORD + "\n")
    connect(client, "by-env", url, password_env="WAREHOUSE_PASSWORD")
    connect(client, "by-file", url, password_file=secret_file, engine="psycopg")
    query = "SELECT g AS n, 'x' || g AS s FROM generate_series(1, 50) g"
    messages: list[str] = []
    for name in ("by-env", "by-file"):
        result = client.import_sql(f"team/{name}", SqlSource(connection=name, query=query))
        assert result.committed and result.version is not None
        messages.append(result.model_dump_json())
        messages.append(client.get_version(result.version.ref, kind="dataset").model_dump_json())
    with pytest.raises(InvalidInput) as bad_query:
        client.import_sql("team/bad", SqlSource(connection="by-env", query="SELECT * FROM nope"))
    messages.append(str(bad_query.value))
    monkeypatch.setenv("WRONG_PASSWORD", BOUNCER_PASSWORD[::-1])
    connect(client, "wrong", url, password_env="WRONG_PASSWORD")
    with pytest.raises(Unauthenticated) as refused:
        client.import_sql("team/bad", SqlSource(connection="wrong", query="SELECT 1 AS one"))
    messages.append(str(refused.value))
    assert BOUNCER_PASSWORD[::-1] not in str(refused.value)

    # A pipeline's step gets the connection from the control plane, the password from the
    # environment it inherits; a failing step's traceback lands in the run log.
    ledger = tmp_path / "ledger"
    for pipeline, state in ((flows.from_the_pooler, "succeeded"), (flows.broken_pooler, "failed")):
        client.register_pipeline("team", pipeline)
        run = client.run_pipeline("team", pipeline.name, {"ledger": str(ledger)})
        assert client.wait_run("team", run.id, 60).state == state
        messages.extend(client.run_logs("team", run.id))
    assert ledger.read_text() == "pooled 5 team/pooled@1\n"
    assert any("missing_table" in m for m in messages)
    messages.extend(e.model_dump_json() for e in client.events(after=0, follow=False))

    env = {
        "MODELYARD_HOME": str(tmp_path / "cli-home"),
        "MODELYARD_CONNECTIONS": json.dumps(
            {"wh": {"url": url, "password_env": "WAREHOUSE_PASSWORD"}}
        ),
    }
    shown = CliRunner().invoke(app, ["config", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    config = json.loads(shown.output)["connections"]
    assert config["value"]["wh"]["password_env"] == "WAREHOUSE_PASSWORD"
    assert config["origin"] == "env MODELYARD_CONNECTIONS"
    messages.append(shown.output)

    assert not [m for m in messages if BOUNCER_PASSWORD in m]
    assert traces(tmp_path, skip=set()) == ["secrets/warehouse"]  # the search finds it
    assert traces(tmp_path, skip={secret_file}) == []
    assert os.environ["WAREHOUSE_PASSWORD"] == BOUNCER_PASSWORD  # it was there all along


def test_settings_refuse_a_password_in_the_url_without_echoing_it() -> None:
    from modelyard.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        Settings(connections={"wh": {"url": f"postgresql://u:{BOUNCER_PASSWORD}@h/db"}})
    assert BOUNCER_PASSWORD not in str(refused.value)
    assert "the URL of connection 'wh' holds a password" in str(refused.value)
    with pytest.raises(ConfigError, match="looks like a secret"):
        Settings(connections={"wh": {"url": "postgresql://u@h/db", "options": {"password": "x"}}})


def test_a_password_in_a_url_names_its_connection_in_every_command(tmp_path: Path) -> None:
    # One bad entry stops every command: the message says which of the connections it is.
    connections = {
        "lite": {"url": f"sqlite:///{tmp_path / 'a.db'}"},
        "wh": {"url": f"postgresql://u:{BOUNCER_PASSWORD}@h/db"},
    }
    env = {"MODELYARD_HOME": str(tmp_path), "MODELYARD_CONNECTIONS": json.dumps(connections)}
    result = CliRunner().invoke(app, ["config"], env=env, catch_exceptions=False)
    assert result.exit_code == 2
    assert "the URL of connection 'wh' holds a password: remove it" in result.output
    assert BOUNCER_PASSWORD not in result.output
