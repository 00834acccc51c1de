"""Split reads (``split_by`` + ``parallel``): one snapshot read as ranges of a column over
several connections, on the local PostgreSQL, directly and through both poolers."""

from __future__ import annotations

import json
import threading
from collections import Counter

import psycopg
import pytest

from modelyard.client import Client
from modelyard.errors import InvalidInput
from modelyard.sql.source import Incremental, SqlSource
from tests.sql.conftest import Lite, Pg
from tests.sql.poolers import Pooler
from tests.sql.test_poolers import ENGINES, through
from tests.sql.test_snapshot import committed_events, rows_of


def _table(pg: Pg) -> None:
    pg.execute("CREATE TABLE t (id int8, day date, v text)")
    pg.execute(
        "INSERT INTO t SELECT g, date '2026-01-01' + g % 97, 'v' || g "
        "FROM generate_series(1, 3000) g"
    )
    pg.execute("INSERT INTO t VALUES (NULL, NULL, 'no id'), (NULL, NULL, 'none either')")
    pg.execute("CREATE INDEX ON t (id)")


@pytest.mark.parametrize("connection", ["pg", "pgcur"])
def test_a_split_read_holds_every_row_once_nulls_included(
    client: Client, pg: Pg, connection: str
) -> None:
    _table(pg)
    source = SqlSource(
        connection=connection, query="SELECT * FROM t", split_by="id", parallel=3, batch_rows=250
    )
    result = client.import_sql("team/t", source)
    assert result.version is not None and result.rows == 3002
    got = rows_of(client, result.version.ref)
    expected = pg.rows("SELECT id, day, v FROM t")
    assert Counter((r["id"], r["day"], r["v"]) for r in got) == Counter(expected)
    split = json.loads(result.version.tags["sql.split"])
    assert split["column"] == "id"
    assert [(r["start"], r["end"], r["rows"]) for r in split["ranges"]] == [
        (None, "1001", 1002),  # the NULLs are in the first range
        ("1001", "2001", 1000),
        ("2001", "3001", 1000),
    ]
    assert [f.path for f in result.version.files] == [
        f"range-00{i}/part-00000.parquet" for i in range(3)
    ]
    # the same data, split the same way: the same digest, nothing committed
    again = client.import_sql("team/t", source)
    assert not again.committed and again.content_sha256 == result.content_sha256
    assert committed_events(client, "t") == ["team/t@1"]


def test_every_range_reads_the_first_connection_s_snapshot(client: Client, pg: Pg) -> None:
    """A writer bumps every row's generation, transaction after transaction, all through the
    import: the rows of every range come from one snapshot, so they share one generation."""
    pg.execute("CREATE TABLE g (id int8 PRIMARY KEY, gen int8 NOT NULL)")
    pg.execute("INSERT INTO g SELECT i, 0 FROM generate_series(1, 3000) i")
    stop = threading.Event()
    bumps = []

    def bump() -> None:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("UPDATE g SET gen = gen + 1")
                bumps.append(1)

    writer = threading.Thread(target=bump)
    writer.start()
    try:
        source = SqlSource(connection="pg", query="SELECT * FROM g", split_by="id", parallel=4)
        for i in range(3):
            result = client.import_sql(f"team/g{i}", source)
            assert result.version is not None
            gens = {r["gen"] for r in rows_of(client, result.version.ref)}
            assert len(gens) == 1, f"rows of {len(gens)} snapshots in one import: {sorted(gens)}"
    finally:
        stop.set()
        writer.join()
    assert len(bumps) > 3, "the writer hardly ran"


def test_dates_and_timestamps_split_too(client: Client, pg: Pg) -> None:
    _table(pg)
    source = SqlSource(connection="pg", query="SELECT * FROM t", split_by="day", parallel=4)
    result = client.import_sql("team/days", source)
    assert result.version is not None and result.rows == 3002
    ranges = json.loads(result.version.tags["sql.split"])["ranges"]
    assert len(ranges) == 4 and ranges[-1]["end"] == "2026-04-08"  # the last day, 97 - 1 on
    assert sum(r["rows"] for r in ranges) == 3002


@pytest.mark.parametrize("engine", ENGINES)
def test_a_split_read_through_a_pooler_equals_the_direct_one(
    client: Client, pg: Pg, pooler: Pooler, engine: str
) -> None:
    _table(pg)
    query = "SELECT * FROM t WHERE v <> :skip"
    split = {"split_by": "id", "parallel": 2, "params": {"skip": "none"}}
    direct = client.import_sql("team/direct", SqlSource(connection="pg", query=query, **split))
    name = through(client, pooler, pg, engine)
    pooled = client.import_sql("team/pooled", SqlSource(connection=name, query=query, **split))
    assert pooled.rows == 3002 and pooled.engine == engine
    assert pooled.content_sha256 == direct.content_sha256


def test_bad_splits_are_refused_and_commit_nothing(client: Client, pg: Pg, lite: Lite) -> None:
    _table(pg)
    lite.execute("CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1), (2);")
    cases = [
        (SqlSource(connection="pg", query="SELECT * FROM t", split_by="v", parallel=2), "text"),
        (
            SqlSource(connection="pg", query="SELECT * FROM t", split_by="nope", parallel=2),
            "nope",
        ),
        (
            SqlSource(connection="lite", query="SELECT * FROM t", split_by="id", parallel=2),
            "needs PostgreSQL",
        ),
    ]
    for source, says in cases:
        with pytest.raises(InvalidInput, match=says):
            client.import_sql("team/bad", source)
    with pytest.raises(InvalidInput, match="both a column and a count"):
        SqlSource(connection="pg", query="SELECT 1", parallel=2)
    with pytest.raises(InvalidInput, match="both a column and a count"):
        SqlSource(connection="pg", query="SELECT 1", split_by="id")
    with pytest.raises(InvalidInput, match="one connection"):
        SqlSource(
            connection="pg",
            query="SELECT 1",
            split_by="id",
            parallel=2,
            incremental=Incremental(column="id"),
        )
    assert committed_events(client, "bad") == []


def test_an_empty_result_is_read_once(client: Client, pg: Pg) -> None:
    _table(pg)
    source = SqlSource(
        connection="pg", query="SELECT * FROM t WHERE false", split_by="id", parallel=2
    )
    with pytest.raises(InvalidInput, match="no rows"):
        client.import_sql("team/empty", source)
    result = client.import_sql("team/empty", source, allow_empty=True)
    assert result.version is not None and result.rows == 0
    assert "sql.split" not in result.version.tags


def test_a_range_that_fails_fails_the_import_and_commits_nothing(client: Client, pg: Pg) -> None:
    _table(pg)
    query = "SELECT id, 1 / (id - 2500) AS x FROM t"  # only the last range divides by zero
    source = SqlSource(connection="pg", query=query, split_by="id", parallel=3, batch_rows=100)
    with pytest.raises(InvalidInput, match="division by zero"):
        client.import_sql("team/fails", source)
    assert committed_events(client, "fails") == []
