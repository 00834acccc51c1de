"""Imports through pgbouncer (transaction mode) and pgpool-II (query cache on), as production
reaches its warehouse: the same content as a direct import, whichever engine."""

from __future__ import annotations

import psycopg
import pytest

from modelyard.client import Client
from modelyard.errors import Unauthenticated
from modelyard.sql.source import Incremental, SqlSource
from tests.sql.conftest import Pg, connect
from tests.sql.poolers import Pooler
from tests.sql.test_snapshot import _pg_types

ENGINES = ["adbc", "psycopg"]


def through(client: Client, pooler: Pooler, pg: Pg, engine: str) -> str:
    name = f"{pooler.name}-{engine}"
    secret = {"password_env": "WAREHOUSE_PASSWORD"} if pooler.name == "pgbouncer" else {}
    connect(client, name, pooler.url(pg.name), engine=engine, **secret)
    return name


@pytest.mark.parametrize("engine", ENGINES)
def test_a_pooled_import_equals_the_direct_one(
    client: Client, pg: Pg, pooler: Pooler, engine: str
) -> None:
    _pg_types(pg)
    query = "SELECT * FROM types WHERE id >= :low ORDER BY id"
    direct = client.import_sql(
        "team/direct", SqlSource(connection="pg", query=query, params={"low": 1})
    )
    pooled = client.import_sql(
        "team/pooled",
        SqlSource(connection=through(client, pooler, pg, engine), query=query, params={"low": 1}),
    )
    assert pooled.engine == engine and pooled.rows == 3
    assert pooled.content_sha256 == direct.content_sha256


@pytest.mark.parametrize("engine", ENGINES)
def test_incremental_imports_through_a_pooler(
    client: Client, pg: Pg, pooler: Pooler, engine: str
) -> None:
    pg.execute("CREATE TABLE t (id int8 PRIMARY KEY, v text)")
    pg.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g")
    source = SqlSource(
        connection=through(client, pooler, pg, engine),
        query="SELECT * FROM t WHERE v <> :skip",
        params={"skip": "none"},
        incremental=Incremental(column="id", window=300),
    )
    first = client.import_sql("team/t", source)
    assert first.windows == ["[-inf, 1001)"] and first.rows == 1000
    pg.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1001, 1700) g")
    second = client.import_sql("team/t", source)
    assert second.windows == ["[1001, 1301)", "[1301, 1601)", "[1601, 1701)"]
    assert second.rows == 700 and second.version is not None
    assert second.version.tags["sql.rows"] == "1700"


def test_imports_bypass_pgpools_query_cache(client: Client, pg: Pg, pgpool: Pooler) -> None:
    pg.execute("CREATE TABLE t (id int8)")
    pg.execute("INSERT INTO t SELECT generate_series(1, 10)")
    count = "SELECT count(*) FROM t"
    with psycopg.connect(pgpool.url(pg.name), autocommit=True) as cached:
        assert cached.execute(count).fetchone() == (10,)
        pg.execute("INSERT INTO t SELECT generate_series(11, 15)")  # behind pgpool's back
        assert cached.execute(count).fetchone() == (10,)  # the cache answers, stale
    for engine in ENGINES:
        name = through(client, pgpool, pg, engine)
        result = client.import_sql(f"team/{engine}", SqlSource(connection=name, query=count))
        assert result.version is not None
        assert result.version.tags["sql.rows"] == "1"
        folder = client.pull(result.version.ref, kind="dataset")
        import pyarrow.parquet as pq

        assert pq.read_table(folder).to_pylist() == [{"count": 15}]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_wrong_password_is_refused_without_saying_it(
    client: Client, pg: Pg, pgbouncer: Pooler, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "Not-the-Pa55word")
    name = through(client, pgbouncer, pg, engine)
    with pytest.raises(Unauthenticated, match="refused the login") as refused:
        client.import_sql("team/t", SqlSource(connection=name, query="SELECT 1 AS one"))
    assert "Not-the-Pa55word" not in str(refused.value)
    assert "Not-the-Pa55word" not in repr(refused.value.details)
    assert client.list_artifacts("team", kind="dataset") == []
