"""``modelyard datasets import-sql``: connections from the environment, one line per outcome."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.cli.conftest import Cli


@pytest.fixture
def warehouse(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, at TIMESTAMP)")
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?)",
            [(i, "click" if i % 2 else "view", f"2026-03-28 10:{i:02d}:00") for i in range(1, 41)],
        )
    monkeypatch.setenv("MODELYARD_CONNECTIONS", json.dumps({"lite": {"url": f"sqlite:///{path}"}}))
    cli("namespaces", "create", "team")
    return path


def test_import_a_query_file_with_parameters(cli: Cli, warehouse: Path, tmp_path: Path) -> None:
    query = tmp_path / "clicks.sql"
    query.write_text("SELECT * FROM events WHERE kind = :kind AND id > :after ORDER BY id\n")
    args = ["datasets", "import-sql", "team/clicks", "--connection", "lite"]
    args += ["--query-file", str(query), "--param", "kind=click", "--param", "after=10"]
    out = cli(*args)
    assert out.startswith("committed team/clicks@1: 15 rows read, 15 rows in 1 file [sqlite, ")
    assert "identical to team/clicks@1" in cli(*args)
    shown = json.loads(cli("datasets", "show", "team/clicks@1", "--json"))
    assert shown["params"] == {"kind": "click", "after": "10"}
    assert shown["tags"]["sql.query"] == query.read_text()

    with sqlite3.connect(warehouse) as conn:
        conn.execute("INSERT INTO events VALUES (41, 'click', '2026-03-28 11:00:00')")
    incremental = ["datasets", "import-sql", "team/all", "--connection", "lite"]
    incremental += ["--query", "SELECT * FROM events", "--watermark", "id", "--window", "25"]
    incremental += ["--start", "1"]
    result = json.loads(cli(*incremental, "--json"))
    assert result["windows"] == ["[1, 26)", "[26, 42)"] and result["rows"] == 41
    assert "no new rows since 42" in cli(*incremental)
    assert "identical to team/all@1" in cli(*incremental, "--backfill", "26..42")
    with sqlite3.connect(warehouse) as conn:
        conn.execute("UPDATE events SET kind = 'fixed' WHERE id = 30")
    out = cli(*incremental, "--backfill", "26..42")
    assert out.startswith("committed team/all@2: 16 rows read, 41 rows in 2 files")


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--query", "SELECT * FROM nowhere"], 2, "no such table: nowhere"),
        (["--query", "SELECT * FROM events WHERE id < 0"], 2, "the query returned no rows"),
        (["--query", "SELECT * FROM events WHERE id = :id"], 2, "parameter :id, which was not"),
        (["--query", "SELECT 1 AS x", "--connection", "nope"], 2, "no connection named 'nope'"),
        (["--query", "SELECT 1 AS x", "--lag", "soon", "--watermark", "x"], 2, "--lag 'soon'"),
        (["--query", "SELECT 1 AS x", "--backfill", "1..2"], 2, "need --watermark COLUMN"),
        (["--query", "SELECT 1 AS x", "--timeout", "0"], 2, "--timeout 0.0: Input should be"),
        (
            ["--query", "SELECT 1 AS x", "--watermark", "x", "--verify", "some"],
            2,
            "--verify 'some'",
        ),
        (
            ["--query", "SELECT 1", "--watermark", "x", "--start", "May"],
            2,
            "expected int, datetime",
        ),
        (["--query", "SELECT 1", "--parallel", "2"], 2, "both a column and a count"),
        (["--query", "SELECT 1", "--parallel", "0"], 2, "--parallel 0: Input should be"),
        (
            ["--query", "SELECT * FROM events", "--split-by", "id", "--parallel", "2"],
            2,
            "a split read (--split-by, --parallel) needs PostgreSQL",
        ),
    ],
)
def test_bad_input_is_one_line_and_commits_nothing(
    cli: Cli, warehouse: Path, extra: list[str], code: int, message: str
) -> None:
    args = ["datasets", "import-sql", "team/bad"]
    if "--connection" not in extra:
        args += ["--connection", "lite"]
    failed = cli.fail(*args, *extra)
    assert failed.exit_code == code and message in failed.output, failed.output
    assert "team/bad" not in cli("datasets", "list", "team")


def test_a_missing_namespace_is_said_before_the_query_runs(cli: Cli, warehouse: Path) -> None:
    # The table does not exist either: the namespace error comes first, so a long query is not
    # run only to be thrown away.
    failed = cli.fail(
        "datasets", "import-sql", "nons/clicks", "--connection", "lite", "--query",
        "SELECT * FROM no_such_table",
    )  # fmt: skip
    assert failed.exit_code == 3, failed.output
    assert "namespace 'nons' does not exist: create it with" in failed.output
