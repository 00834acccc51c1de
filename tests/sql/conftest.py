"""Warehouses for the import tests: a SQLite file, a fresh PostgreSQL database, and the same
database through pgbouncer (transaction mode, password auth) and pgpool-II (query cache on).

Each test session starts its own poolers (tests/sql/poolers.py) and stops them at the end.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.settings import Settings
from modelyard.sql.connections import Connection
from tests.conftest import unavailable
from tests.sql.poolers import Pooler, find_tool, start_pgbouncer, start_pgpool

# The password pgbouncer asks for: tests grep for it everywhere an import leaves traces.
BOUNCER_PASSWORD = "Wh-s3cret-7f1c9e"


@pytest.fixture
def client(server: BackgroundServer, tmp_path: Path) -> Iterator[Client]:
    """An admin SDK client whose settings hold the warehouse connections tests add."""
    token = server.plane.settings.admin_key_path.read_text().strip()
    settings = Settings(home=tmp_path / "client-home", url=server.url)
    with Client(server.url, token, settings=settings, cache_dir=tmp_path / "pulled") as sdk:
        sdk.create_namespace("team")
        yield sdk


def connect(client: Client, name: str, url: str, **fields: Any) -> None:
    client.settings.connections[name] = Connection(url=url, **fields)


class Lite:
    """A SQLite warehouse file, connection ``lite``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def execute(self, sql: str, rows: Sequence[Sequence[Any]] | None = None) -> None:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            if rows is None:
                conn.executescript(sql)
            else:
                conn.executemany(sql, rows)
            conn.commit()


@pytest.fixture
def lite(client: Client, tmp_path: Path) -> Lite:
    warehouse = Lite(tmp_path / "warehouse.db")
    warehouse.execute("")
    connect(client, "lite", warehouse.url)
    return warehouse


class Pg:
    """A fresh PostgreSQL database: ``url`` direct, ``name`` its database name."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = urlsplit(url).path.lstrip("/")

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(sql, rows)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return list(conn.execute(sql).fetchall())


@pytest.fixture
def pg(client: Client, pg_url: str) -> Pg:
    """Connections ``pg`` (ADBC, the default) and ``pgcur`` (the psycopg cursor engine)."""
    warehouse = Pg(pg_url.replace("postgresql+psycopg://", "postgresql://", 1))
    connect(client, "pg", warehouse.url)
    connect(client, "pgcur", warehouse.url, engine="psycopg")
    return warehouse


# poolers ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pgbouncer(pg_server: str) -> Iterator[Pooler]:
    """pgbouncer in transaction mode before the local PostgreSQL, asking for a password."""
    if find_tool("pgbouncer") is None:
        unavailable("pgbouncer is not installed: 'make tools' unpacks Debian's into .tools/")
    pooler = start_pgbouncer(pg_server, BOUNCER_PASSWORD)
    yield pooler
    pooler.stop()


@pytest.fixture(scope="session")
def pgpool(pg_server: str) -> Iterator[Pooler]:
    """pgpool-II (raw mode) before the local PostgreSQL, with its in-memory query cache on."""
    if find_tool("pgpool") is None:
        unavailable("pgpool-II is not installed: 'make tools' unpacks Debian's into .tools/")
    pooler = start_pgpool(pg_server)
    yield pooler
    pooler.stop()


@pytest.fixture(params=["pgbouncer", "pgpool"])
def pooler(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Pooler:
    """Each pooler in turn; pgbouncer's password in ``WAREHOUSE_PASSWORD``."""
    monkeypatch.setenv("WAREHOUSE_PASSWORD", BOUNCER_PASSWORD)
    pooled: Pooler = request.getfixturevalue(request.param)
    return pooled
