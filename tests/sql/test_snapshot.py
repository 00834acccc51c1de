"""Snapshot imports on SQLite and PostgreSQL (both engines): exact types, digests, bad input."""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from modelyard.client import Client
from modelyard.errors import (
    InvalidInput,
    ModelyardError,
    NotFound,
    ServerUnreachable,
    TimedOut,
)
from modelyard.sql.source import SqlSource
from modelyard.types import ModelRef
from tests.sql.conftest import Lite, Pg, connect

UTC = dt.UTC


def rows_of(client: Client, ref: str) -> list[dict[str, Any]]:
    folder = client.pull(ModelRef.parse(ref), kind="dataset")
    return list(pq.read_table(folder).to_pylist())


def committed_events(client: Client, name: str) -> list[str]:
    return [
        e.subject
        for e in client.events(after=0, follow=False, types=["dataset.version.committed"])
        if e.subject.startswith(f"team/{name}@")
    ]


# SQLite ---------------------------------------------------------------------------------------
SQLITE_TABLE = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY, small SMALLINT, big BIGINT, ratio REAL, amount DECIMAL(12, 4),
    name TEXT, label VARCHAR(20), raw BLOB, happened TIMESTAMPTZ, local DATETIME, day DATE,
    flag BOOLEAN, doc JSON
);
"""
SQLITE_ROWS = [
    (
        1,
        -32768,
        2**63 - 1,
        0.1,
        "12345678.1234",
        "naïve ☕ text",
        "a",
        b"\x00\xff",
        "2024-03-10T02:30:00.123456+05:30",
        "2024-03-10 02:30:00",
        "2024-03-10",
        1,
        '{"a": [1, 2, {"b": null}]}',
    ),
    (2, None, None, None, None, None, None, None, None, None, None, None, None),
    (
        3,
        0,
        -1,
        -2.5e-300,
        "-0.0001",
        "",
        "",
        b"",
        "2024-01-01T00:00:00Z",
        "2024-01-01T23:59:59.5",
        "1970-01-01",
        0,
        "[]",
    ),
]


def test_sqlite_round_trip_of_every_common_type(client: Client, lite: Lite) -> None:
    lite.execute(SQLITE_TABLE)
    lite.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", SQLITE_ROWS)
    result = client.import_sql(
        "team/events", SqlSource(connection="lite", query="SELECT * FROM events ORDER BY id")
    )
    assert result.committed and result.version is not None
    schema = {c["name"]: c["type"] for c in result.version.signature["schema"]}
    assert schema == {
        "id": "int64",
        "small": "int64",
        "big": "int64",
        "ratio": "double",
        "amount": "decimal128(12, 4)",
        "name": "string",
        "label": "string",
        "raw": "binary",
        "happened": "timestamp[us, tz=UTC]",
        "local": "timestamp[us]",
        "day": "date32[day]",
        "flag": "bool",
        "doc": "extension<arrow.json>",
    }
    first, empty, third = rows_of(client, result.version.ref)
    assert first == {
        "id": 1,
        "small": -32768,
        "big": 2**63 - 1,
        "ratio": 0.1,
        "amount": decimal.Decimal("12345678.1234"),
        "name": "naïve ☕ text",
        "label": "a",
        "raw": b"\x00\xff",
        "happened": dt.datetime(2024, 3, 9, 21, 0, 0, 123456, tzinfo=UTC),
        "local": dt.datetime(2024, 3, 10, 2, 30),
        "day": dt.date(2024, 3, 10),
        "flag": True,
        "doc": '{"a": [1, 2, {"b": null}]}',
    }
    assert empty == {"id": 2} | {k: None for k in first if k != "id"}
    assert third["ratio"] == -2.5e-300 and third["amount"] == decimal.Decimal("-0.0001")
    assert third["happened"] == dt.datetime(2024, 1, 1, tzinfo=UTC)
    assert third["local"] == dt.datetime(2024, 1, 1, 23, 59, 59, 500000)
    assert (third["flag"], third["name"], third["raw"]) == (False, "", b"")


def test_the_version_records_what_was_imported(client: Client, lite: Lite) -> None:
    lite.execute("CREATE TABLE t (id INTEGER, name TEXT);")
    lite.execute("INSERT INTO t VALUES (?, ?)", [(i, f"n{i}") for i in range(10)])
    query = "SELECT id, name FROM t WHERE id >= :low AND name <> :skip ORDER BY id"
    source = SqlSource(connection="lite", query=query, params={"low": 3, "skip": "n5"})
    result = client.import_sql("team/t", source)
    version = result.version
    assert version is not None and result.rows == 6
    assert version.params == {"low": 3, "skip": "n5"}
    assert version.tags["sql.connection"] == "lite"
    assert version.tags["sql.engine"] == "sqlite"
    assert version.tags["sql.server_version"].startswith("SQLite 3.")
    assert version.tags["sql.query"] == query
    assert version.tags["sql.query_sha256"] == source.query_sha256
    assert version.tags["sql.rows"] == "6"
    assert version.tags["sql.content_sha256"] == result.content_sha256
    assert version.signature["schema"] == [
        {"name": "id", "type": "int64", "nullable": True},
        {"name": "name", "type": "string", "nullable": True},
    ]
    assert [f.path for f in version.files] == ["part-00000.parquet"]


def test_same_data_same_digest_and_changed_data_a_new_version(client: Client, lite: Lite) -> None:
    lite.execute("CREATE TABLE t (id INTEGER, v REAL);")
    lite.execute("INSERT INTO t VALUES (?, ?)", [(i, i / 7) for i in range(1000)])
    source = SqlSource(connection="lite", query="SELECT * FROM t ORDER BY id", batch_rows=64)
    first = client.import_sql("team/t", source)
    assert first.committed and first.version is not None
    # Other batch boundaries, same data: the same digest, so nothing is committed.
    again = client.import_sql("team/t", source.model_copy(update={"batch_rows": 999}))
    assert not again.committed and again.content_sha256 == first.content_sha256
    assert "identical to team/t@1" in again.reason
    assert committed_events(client, "t") == ["team/t@1"]

    lite.execute("UPDATE t SET v = 0.5 WHERE id = 500;")
    changed = client.import_sql("team/t", source)
    assert changed.committed and changed.version is not None and changed.version.number == 2
    assert changed.content_sha256 != first.content_sha256
    forced = client.import_sql("team/t", source, force=True)
    assert forced.version is not None and forced.version.number == 3
    assert forced.content_sha256 == changed.content_sha256
    assert committed_events(client, "t") == ["team/t@1", "team/t@2", "team/t@3"]


def test_parameters_are_bound_by_the_driver_never_formatted(client: Client, lite: Lite) -> None:
    lite.execute("CREATE TABLE t (name TEXT); INSERT INTO t VALUES ('it''s'), ('other');")
    hostile = "x'; DROP TABLE t; --"
    source = SqlSource(
        connection="lite",
        query="SELECT name, ':not_a_param' AS literal FROM t WHERE name = :name OR name = :name2",
        params={"name": hostile, "name2": "it's"},
    )
    result = client.import_sql("team/t", source)
    assert result.rows == 1
    assert rows_of(client, "team/t@1") == [{"name": "it's", "literal": ":not_a_param"}]
    with pytest.raises(InvalidInput, match="uses parameter :name2, which was not given"):
        client.import_sql("team/u", source.model_copy(update={"params": {"name": "a"}}))
    with pytest.raises(InvalidInput, match="'extra' is given but the query does not use"):
        client.import_sql(
            "team/u", source.model_copy(update={"params": {**source.params, "extra": 1}})
        )


def test_the_generic_sqlalchemy_engine_reads_what_sqlite_reads(client: Client, lite: Lite) -> None:
    lite.execute("CREATE TABLE t (id INTEGER, name TEXT, score REAL, at TEXT);")
    lite.execute(
        "INSERT INTO t VALUES (?, ?, ?, ?)",
        [
            (i, f"n{i}" if i % 2 else None, i * 1.5, f"2024-01-0{1 + i % 9}T10:00:00+00:00")
            for i in range(300)
        ],
    )
    query = "SELECT id, name, score, at FROM t ORDER BY id"
    types = {"at": "timestamp[us, tz=UTC]"}
    native = client.import_sql("team/a", SqlSource(connection="lite", query=query, types=types))
    generic = client.import_sql(
        "team/b",
        SqlSource(connection="lite", query=query, types=types, engine="sqlalchemy", batch_rows=7),
    )
    assert generic.engine == "sqlalchemy" and native.engine == "sqlite"
    assert generic.content_sha256 == native.content_sha256
    assert rows_of(client, "team/b@1")[1]["at"] == dt.datetime(2024, 1, 2, 10, tzinfo=UTC)


def test_sqlite_bad_input_commits_nothing(client: Client, lite: Lite, tmp_path: Path) -> None:
    lite.execute("CREATE TABLE t (id INTEGER);")
    cases: list[tuple[str, dict[str, Any], type[ModelyardError], str]] = [
        ("SELECT * FROM missing", {}, InvalidInput, "no such table: missing"),
        ("SELEC 1", {}, InvalidInput, "syntax error"),
        ("SELECT * FROM t", {}, InvalidInput, "the query returned no rows"),
        ("INSERT INTO t VALUES (1) RETURNING id", {}, InvalidInput, "readonly"),
        (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
            "SELECT count(*) FROM n",
            {"timeout_seconds": 0.3},
            TimedOut,
            "timeout",
        ),
    ]
    for query, extra, error, message in cases:
        with pytest.raises(error, match=message):
            client.import_sql("team/bad", SqlSource(connection="lite", query=query, **extra))
    connect(client, "gone", f"sqlite:///{tmp_path / 'nope.db'}")
    with pytest.raises(NotFound, match="no database file"):
        client.import_sql("team/bad", SqlSource(connection="gone", query="SELECT 1"))
    with pytest.raises(InvalidInput, match="no connection named 'other'"):
        client.import_sql("team/bad", SqlSource(connection="other", query="SELECT 1"))
    with pytest.raises(NotFound):
        client.list_versions("team/bad", kind="dataset")
    assert lite.path.exists()
    empty = client.import_sql(
        "team/empty", SqlSource(connection="lite", query="SELECT * FROM t"), allow_empty=True
    )
    assert empty.committed and empty.version is not None and empty.rows == 0
    assert rows_of(client, empty.version.ref) == []


# PostgreSQL -----------------------------------------------------------------------------------
PG_TABLE = """
CREATE TABLE types (
    id int8 PRIMARY KEY, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric(18, 4),
    nu numeric, t text, vc varchar(20), ch char(3), ts timestamp, tstz timestamptz, d date,
    tm time, b bool, j json, jb jsonb, ai int4[], at text[], bt bytea, u uuid, mood mood
);
"""
PG_ROWS = [
    (
        1,
        -32768,
        2**31 - 1,
        -(2**63),
        1.5,
        0.1,
        decimal.Decimal("-12345678901234.5678"),
        decimal.Decimal("3.14159265358979323846264338327950288419716939937510"),
        "naïve ☕ \t text",
        "vc",
        "abc",
        dt.datetime(2024, 3, 10, 2, 30, 0, 123456),
        dt.datetime(2024, 3, 10, 2, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.date(1, 1, 1),
        dt.time(23, 59, 59, 999999),
        True,
        '{"b": 1, "a": [1, 2]}',
        '{"b": 1, "a": [1, 2]}',
        [1, None, 3],
        ["x", None, ""],
        b"\x00\xff\x10",
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "happy",
    ),
    (2, *([None] * 22)),
    (
        3,
        0,
        0,
        0,
        -0.25,
        -1e300,
        decimal.Decimal("0"),
        decimal.Decimal("1e-20"),
        "",
        "",
        "   ",
        dt.datetime(1970, 1, 1),
        dt.datetime(2262, 4, 11, tzinfo=UTC),
        dt.date(9999, 12, 31),
        dt.time(0, 0),
        False,
        "[]",
        "{}",
        [],
        [],
        b"",
        uuid.UUID(int=0),
        "sad",
    ),
]


def _pg_types(pg: Pg) -> None:
    pg.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
    pg.execute(PG_TABLE)
    pg.executemany(f"INSERT INTO types VALUES ({', '.join(['%s'] * 23)})", PG_ROWS)


@pytest.mark.parametrize("connection", ["pg", "pgcur"])
def test_postgres_round_trip_of_every_common_type(client: Client, pg: Pg, connection: str) -> None:
    _pg_types(pg)
    result = client.import_sql(
        "team/types", SqlSource(connection=connection, query="SELECT * FROM types ORDER BY id")
    )
    assert result.version is not None
    assert result.engine == ("adbc" if connection == "pg" else "psycopg")
    schema = {c["name"]: c["type"] for c in result.version.signature["schema"]}
    assert schema == {
        "id": "int64", "i2": "int16", "i4": "int32", "i8": "int64", "f4": "float", "f8": "double",
        "n": "decimal128(18, 4)", "nu": "string", "t": "string", "vc": "string", "ch": "string",
        "ts": "timestamp[us]", "tstz": "timestamp[us, tz=UTC]", "d": "date32[day]",
        "tm": "time64[us]", "b": "bool", "j": "extension<arrow.json>",
        "jb": "extension<arrow.json>", "ai": "list<item: int32>", "at": "list<item: string>",
        "bt": "binary", "u": "extension<arrow.uuid>", "mood": "string",
    }  # fmt: skip
    # The database's own text of what is text in the parts (json, jsonb, bare numerics).
    texts = pg.rows("SELECT j::text, jb::text, nu::text FROM types ORDER BY id")
    got = rows_of(client, result.version.ref)
    for row, source, (j, jb, nu) in zip(got, PG_ROWS, texts, strict=True):
        expected = dict(zip(row, source, strict=True))
        expected.update(j=j, jb=jb, nu=nu)
        if isinstance(tstz := expected["tstz"], dt.datetime):
            expected["tstz"] = tstz.astimezone(UTC)
        assert row == expected
    assert got[0]["nu"] == "3.14159265358979323846264338327950288419716939937510"


def test_arrays_of_uuids_and_json_keep_their_element_types(client: Client, pg: Pg) -> None:
    """ADBC 1.8 hands them over as 16 bytes and as text; they are stored as uuids and json, as
    later drivers hand them over."""
    pg.execute("CREATE TABLE arrays (id int8, us uuid[], js jsonb[])")
    one = "00000000-0000-0000-0000-000000000001"
    pg.execute(
        f"INSERT INTO arrays VALUES (1, ARRAY['{one}'::uuid, NULL], ARRAY['{{\"a\": 1}}'::jsonb]),"
        " (2, NULL, NULL), (3, '{}', '{}')"
    )
    query = "SELECT * FROM arrays ORDER BY id"
    result = client.import_sql("team/arrays", SqlSource(connection="pg", query=query))
    assert result.version is not None
    schema = {c["name"]: c["type"] for c in result.version.signature["schema"]}
    assert schema["us"] == "list<item: extension<arrow.uuid>>"
    assert schema["js"] == "list<item: extension<arrow.json>>"
    got = rows_of(client, result.version.ref)
    assert [(r["us"], r["js"]) for r in got] == [
        ([uuid.UUID(one), None], ['{"a": 1}']),
        (None, None),
        ([], []),
    ]


def test_both_postgres_engines_agree_on_the_digest(client: Client, pg: Pg) -> None:
    _pg_types(pg)
    query = "SELECT * FROM types ORDER BY id"
    adbc = client.import_sql("team/a", SqlSource(connection="pg", query=query))
    cursor = client.import_sql("team/b", SqlSource(connection="pgcur", query=query, batch_rows=2))
    assert adbc.content_sha256 == cursor.content_sha256


@pytest.mark.parametrize("connection", ["pg", "pgcur"])
def test_the_snapshot_holds_while_rows_are_written(client: Client, pg: Pg, connection: str) -> None:
    pg.execute("CREATE TABLE t (id int8 PRIMARY KEY, v text NOT NULL)")
    pg.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20000) g")
    writes: list[threading.Thread] = []

    def write_meanwhile(rows: int) -> None:
        if writes:
            return

        def write() -> None:
            pg.execute("INSERT INTO t SELECT g, 'new' FROM generate_series(20001, 25000) g")
            pg.execute("UPDATE t SET v = 'changed' WHERE id <= 100")
            pg.execute("DELETE FROM t WHERE id > 19900 AND id <= 20000")

        writes.append(threading.Thread(target=write))
        writes[0].start()
        writes[0].join()  # committed while the import still reads

    source = SqlSource(connection=connection, query="SELECT * FROM t ORDER BY id", batch_rows=500)
    result = client.import_sql("team/t", source, progress=write_meanwhile)
    assert writes, "the import never reported progress"
    assert result.rows == 20000
    got = rows_of(client, "team/t@1")
    assert [r["id"] for r in got] == list(range(1, 20001))
    assert all(r["v"] == f"v{r['id']}" for r in got)
    after = client.import_sql("team/t", source)
    assert after.rows == 24900 and after.version is not None and after.version.number == 2


@pytest.mark.parametrize("connection", ["pg", "pgcur"])
def test_postgres_bad_input_commits_nothing(client: Client, pg: Pg, connection: str) -> None:
    pg.execute("CREATE TABLE t (id int4, at point, span interval)")
    pg.execute("INSERT INTO t VALUES (1, point(1, 2), interval '1 day')")
    pg.execute("CREATE SEQUENCE s")
    cases: list[tuple[str, dict[str, Any], type[ModelyardError], str]] = [
        ("SELECT * FROM missing", {}, InvalidInput, 'relation "missing" does not exist'),
        ("SELEC 1", {}, InvalidInput, 'syntax error at or near "SELEC"'),
        ("SELECT id FROM t WHERE id > 1", {}, InvalidInput, "the query returned no rows"),
        ("SELECT id, at FROM t", {}, InvalidInput, "column 'at' has type point"),
        ("SELECT id, span FROM t", {}, InvalidInput, "column 'span' has type interval"),
        ("SELECT nextval('s') AS n", {}, InvalidInput, "imports run read-only"),
        ("SELECT pg_sleep(10)::text AS slept", {"timeout_seconds": 0.5}, TimedOut, "timeout"),
    ]
    for query, extra, error, message in cases:
        with pytest.raises(error, match=message):
            client.import_sql("team/bad", SqlSource(connection=connection, query=query, **extra))
    connect(client, "down", "postgresql://postgres@127.0.0.1:1/nowhere", engine=None)
    with pytest.raises(ServerUnreachable, match="cannot connect to connection 'down'"):
        client.import_sql("team/bad", SqlSource(connection="down", query="SELECT 1"))
    with pytest.raises(NotFound):
        client.list_versions("team/bad", kind="dataset")
    assert pg.rows("SELECT count(*) FROM t") == [(1,)]


def test_a_string_parameter_compared_with_a_number_says_how_to_cast_it(
    client: Client, pg: Pg
) -> None:
    # Every --param is a string; ADBC binds it as text, where psycopg lets the server infer it.
    pg.execute("CREATE TABLE amounts (id int, amount numeric(10, 2))")
    pg.execute("INSERT INTO amounts VALUES (1, 50), (2, 150)")
    query = "SELECT * FROM amounts WHERE amount >= :least"
    with pytest.raises(InvalidInput, match=r"bound as text: .* e\.g\. :least::numeric"):
        client.import_sql(
            "team/a", SqlSource(connection="pg", query=query, params={"least": "100"})
        )
    cast = SqlSource(connection="pg", query=query + "::numeric", params={"least": "100"})
    assert client.import_sql("team/a", cast).rows == 1
