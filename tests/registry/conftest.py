"""Registry semantics run on both metadata backends: SQLite and a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(home=tmp_path / "home", api_port=0, database_url=database_url)
