from __future__ import annotations

import re
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
