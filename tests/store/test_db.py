from __future__ import annotations

import contextlib
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelyard.errors import StoreError
from modelyard.store.db import Database


def test_migrations_create_the_schema_and_are_idempotent(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        db.migrate()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {
            "namespaces",
            "versions",
            "version_files",
            "aliases",
            "alias_history",
            "events",
            "consumers",
            "api_keys",
            "key_roles",
            "webhooks",
            "alembic_version",
        } <= tables
        with db.read() as session:
            assert session.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        db.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'sub' / 'm.db'}")
    with db.read() as session:
        assert session.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    db.dispose()


def test_an_unreachable_database_is_a_store_error_naming_it() -> None:
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/nothing?connect_timeout=2")
    with pytest.raises(StoreError, match=re.escape("127.0.0.1:1")):
        db.migrate()


def test_revisions_made_before_replica_tokens_get_one_each(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from modelyard.store.db import MIGRATIONS

    path = tmp_path / "m.db"
    db = Database(f"sqlite:///{path}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with db.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0004")
        # Two revisions of one deployment as 0004 stored them.
        with contextlib.closing(sqlite3.connect(path)) as raw, raw:
            now = "2026-01-01 00:00:00"
            raw.execute("INSERT INTO namespaces VALUES (1, 'team', '', ?)", (now,))
            raw.execute("INSERT INTO artifacts VALUES (1, 1, 'model', 'm', '', ?)", (now,))
            raw.execute(
                "INSERT INTO versions VALUES ('v', 1, 1, 'committed', '', 'python', '{}', '{}', "
                "'{}', '[]', '{}', NULL, 0, NULL, ?, ?, ?)",
                (now, now, now),
            )
            raw.execute(
                "INSERT INTO deployments (id, namespace_id, name, model, spec, traffic, "
                "created_at, updated_at) VALUES ('d', 1, 'api', 'm@latest', '{}', '[]', ?, ?)",
                (now, now),
            )
            raw.executemany(
                "INSERT INTO revisions (id, deployment_id, number, version_id, version_number, "
                "spec, state, created_at) VALUES (?, 'd', ?, 'v', 1, '{}', 'ready', ?)",
                [("r1", 1, now), ("r2", 2, now)],
            )
        db.migrate()
        with db.read() as session:
            tokens = session.execute(sa.text("SELECT replica_token FROM revisions")).scalars()
            found = list(tokens)
        assert len(found) == 2 and len(set(found)) == 2
        assert all(re.fullmatch("[0-9a-f]{64}", token) for token in found)
    finally:
        db.dispose()


def test_processes_that_start_at_once_on_a_fresh_database_all_migrate_it(
    database_url: str,
) -> None:
    """Replicas started together on an empty database: none fails on a half-made schema."""
    code = (
        "import sys\n"
        "from modelyard.store.db import Database\n"
        "db = Database(sys.argv[1])\n"
        "db.migrate()\n"
        "db.dispose()\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in processes]
    failed = [err for p, (_, err) in zip(processes, results, strict=True) if p.returncode]
    assert failed == []
    db = Database(database_url)
    try:
        with db.read() as session:
            heads = session.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert len(heads) == 1
    finally:
        db.dispose()
