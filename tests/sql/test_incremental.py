"""Incremental imports: windows over a watermark, lag and late rows, backfills, reused parts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from modelyard.client import Client
from modelyard.errors import Conflict, InvalidInput
from modelyard.sql import windows as w
from modelyard.sql.snapshot import ClientRegistry, import_sql
from modelyard.sql.source import ImportResult, Incremental, SqlSource
from modelyard.types import ModelRef
from tests.conftest import Clock
from tests.sql.conftest import Lite, Pg

UTC = dt.UTC


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, 28, hour, minute, tzinfo=UTC)


def run(client: Client, source: SqlSource, clock: Clock, **kwargs: Any) -> ImportResult:
    """An import with the clock the test sets (the SDK's uses the real one)."""
    return import_sql(
        ClientRegistry(client),
        client.settings.connections,
        ModelRef("team", "events"),
        source,
        clock=clock,
        **kwargs,
    )


def table(client: Client, ref: str) -> list[dict[str, Any]]:
    folder = client.pull(ModelRef.parse(ref), kind="dataset")
    return list(pq.read_table(folder).to_pylist())


def uploads(client: Client) -> list[str]:
    """Record the paths ``push`` sends to the blob store (content it holds is not sent)."""
    sent: list[str] = []
    upload = client._upload

    def recording(path: Path, item: dict[str, Any], progress: Any) -> None:
        sent.append(item["path"])
        upload(path, item, progress)

    client._upload = recording  # type: ignore[method-assign]
    return sent


@pytest.mark.parametrize("warehouse", ["lite", "pg"])
def test_new_ids_become_a_new_part_and_stored_parts_are_not_sent_again(
    client: Client, warehouse: str, request: pytest.FixtureRequest
) -> None:
    db: Lite | Pg = request.getfixturevalue(warehouse)
    create = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"
    insert = (
        "INSERT INTO t VALUES (?, ?)" if warehouse == "lite" else "INSERT INTO t VALUES (%s, %s)"
    )
    if isinstance(db, Lite):
        db.execute(create + ";")
        db.execute(insert, [(i, f"n{i}") for i in range(1, 101)])
    else:
        db.execute(create)
        db.executemany(insert, [(i, f"n{i}") for i in range(1, 101)])
    source = SqlSource(
        connection=warehouse, query="SELECT * FROM t", incremental=Incremental(column="id")
    )
    sent = uploads(client)
    first = client.import_sql("team/events", source)
    # the bulk and a tail of the last 1 % of the ids, each a part of its own
    assert first.committed and first.windows == ["[-inf, 100)", "[100, 101)"]
    assert first.rows == 100 and first.version is not None
    assert [r["rows"] for r in json.loads(first.version.tags["sql.windows"])] == [99, 1]
    assert sent == ["window-000001/part-00000.parquet", "window-000002/part-00000.parquet"]

    nothing = client.import_sql("team/events", source)
    assert not nothing.committed and nothing.reason == "no new rows since 101: nothing committed"

    more = [(i, f"n{i}") for i in range(101, 151)]
    db.execute(insert, more) if isinstance(db, Lite) else db.executemany(insert, more)
    second = client.import_sql("team/events", source)
    assert second.committed and second.windows == ["[101, 151)"] and second.rows == 50
    assert second.version is not None
    assert sent[2:] == ["window-000003/part-00000.parquet"]
    *old, new = second.version.files
    assert old == first.version.files  # the same stored content, referenced by its digest
    assert new.path == "window-000003/part-00000.parquet"
    assert second.version.tags["sql.rows"] == "150"
    assert sorted(r["id"] for r in table(client, second.version.ref)) == list(range(1, 151))


def test_late_rows_within_the_lag_are_imported_later_beyond_it_refused(
    client: Client, pg: Pg
) -> None:
    pg.execute("CREATE TABLE clicks (id serial, at timestamptz NOT NULL, page text)")
    add = "INSERT INTO clicks (at, page) VALUES (%s, %s)"
    pg.executemany(add, [(at(10, m), f"p{m}") for m in range(0, 60, 10)])  # 10:00 .. 10:50
    source = SqlSource(
        connection="pg",
        query="SELECT at, page FROM clicks",
        incremental=Incremental(column="at", lag=dt.timedelta(minutes=15)),
    )
    clock = Clock(at(11))
    first = run(client, source, clock)
    # the tail is the lag, longer than 1 % of [10:00, 10:45)
    assert first.windows == [
        "[-inf, 2026-03-28T10:30:00+00:00)",
        "[2026-03-28T10:30:00+00:00, 2026-03-28T10:45:00+00:00)",
    ]
    assert first.rows == 5 and first.version is not None
    assert [r["rows"] for r in json.loads(first.version.tags["sql.windows"])] == [3, 2]

    pg.executemany(add, [(at(10, 47), "late but within the lag"), (at(11, 5), "p65")])
    clock.now = at(11, 30)
    second = run(client, source, clock)
    assert second.windows == ["[2026-03-28T10:45:00+00:00, 2026-03-28T11:15:00+00:00)"]
    assert second.rows == 3  # 10:47, 10:50, 11:05

    pg.execute(add, (at(11, 10), "later than the lag allowed"))
    clock.now = at(12)
    with pytest.raises(Conflict, match="not monotonic") as refused:
        run(client, source, clock)
    assert "held 3 rows when team/events@2 imported it and holds 4 now" in refused.value.message
    assert refused.value.details["values"] == ["2026-03-28T11:10:00+00:00"]
    assert len(client.list_versions("team/events", kind="dataset")) == 2

    backfilled = run(client, source, clock, backfill=(at(10, 45), at(11, 15)))
    assert backfilled.rows == 4 and backfilled.version is not None
    assert backfilled.version.tags["sql.rows"] == "9"
    assert [f.path for f in backfilled.version.files] == [
        "window-000001/part-00000.parquet",
        "window-000002/part-00000.parquet",
        "window-000004/part-00000.parquet",
    ]
    after = run(client, source, clock)
    assert after.windows == ["[2026-03-28T11:15:00+00:00, 2026-03-28T11:45:00+00:00)"]
    assert after.rows == 0 and not after.committed  # nothing between 11:15 and 11:45
    pages = sorted(r["page"] for r in table(client, "team/events@latest"))
    assert pages == sorted(
        [f"p{m}" for m in range(0, 60, 10)]
        + ["late but within the lag", "p65", "later than the lag allowed"]
    )


@pytest.mark.parametrize("warehouse", ["lite", "pg"])
@pytest.mark.parametrize("verify", ["last", "all"])
def test_a_late_id_in_a_first_import_s_tail_is_refused_in_its_bulk_only_with_verify_all(
    client: Client, warehouse: str, verify: str, request: pytest.FixtureRequest
) -> None:
    db: Lite | Pg = request.getfixturevalue(warehouse)
    insert = (
        "INSERT INTO t VALUES (?, ?)" if warehouse == "lite" else "INSERT INTO t VALUES (%s, %s)"
    )

    def add(ids: list[int]) -> None:
        rows = [(i, f"n{i}") for i in ids]
        db.execute(insert, rows) if isinstance(db, Lite) else db.executemany(insert, rows)

    db.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT)")
    add([i for i in range(1, 1001) if i not in (5, 995)])
    source = SqlSource(
        connection=warehouse,
        query="SELECT * FROM t",
        incremental=Incremental(column="id", verify=verify),
        batch_rows=64,  # the cut falls inside a batch: its rows are split between the parts
    )
    first = client.import_sql("team/events", source)
    assert first.windows == ["[-inf, 991)", "[991, 1001)"] and first.rows == 998
    assert first.version is not None
    recorded = json.loads(first.version.tags["sql.windows"])
    assert [(r["start"], r["end"], r["rows"]) for r in recorded] == [
        (None, "991", 989),
        ("991", "1001", 9),
    ]
    folder = client.pull(ModelRef.parse(first.version.ref), kind="dataset")
    tail = pq.read_table(folder / recorded[1]["files"][0])
    assert tail.column("id").to_pylist() == [i for i in range(991, 1001) if i != 995]

    add([995, 1001])  # 995 arrived after the import of the tail [991, 1001): refused
    with pytest.raises(Conflict, match="not monotonic") as refused:
        client.import_sql("team/events", source)
    assert "window [991, 1001) held 9 rows when team/events@1 imported it and holds 10 now" in (
        refused.value.message
    )
    assert refused.value.details["values"] == ["995"]
    db.execute("DELETE FROM t WHERE id = 995")

    add([5])  # late in the bulk, older than the tail: only verify="all" recounts the bulk
    if verify == "all":
        with pytest.raises(Conflict, match="not monotonic") as refused:
            client.import_sql("team/events", source)
        assert "window [-inf, 991) held 989 rows when team/events@1 imported it and holds 990" in (
            refused.value.message
        )
        assert refused.value.details["values"] == ["5"]
        db.execute("DELETE FROM t WHERE id = 5")
    second = client.import_sql("team/events", source)
    assert second.committed and second.windows == ["[1001, 1002)"] and second.rows == 1
    assert second.version is not None
    ids = {r["id"] for r in table(client, second.version.ref)}
    assert 5 not in ids and len(ids) == 999  # verify="last": the late 5 is missed, as documented
    add([10_000_000_000])  # past int4: the bound is an int8 literal
    third = client.import_sql("team/events", source)
    assert third.windows == ["[1002, 10000000001)"] and third.rows == 1


@pytest.mark.parametrize("warehouse", ["lite", "pg"])
def test_two_first_imports_of_the_same_rows_digest_the_same(
    client: Client, warehouse: str, request: pytest.FixtureRequest
) -> None:
    db: Lite | Pg = request.getfixturevalue(warehouse)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    rows = [(i, f"n{i % 7}") for i in range(1, 5001)]
    if isinstance(db, Lite):
        db.execute("INSERT INTO t VALUES (?, ?)", rows)
    else:
        db.executemany("INSERT INTO t VALUES (%s, %s)", rows)
    source = SqlSource(
        connection=warehouse,
        query="SELECT * FROM t ORDER BY id",
        incremental=Incremental(column="id"),
        batch_rows=333,
    )
    one = client.import_sql("team/one", source)
    other = client.import_sql("team/other", source.model_copy(update={"batch_rows": 1000}))
    assert one.windows == other.windows == ["[-inf, 4951)", "[4951, 5001)"]
    assert one.version is not None and other.version is not None
    assert one.content_sha256 == other.content_sha256
    assert one.version.tags["sql.windows"] == other.version.tags["sql.windows"]
    assert [r["rows"] for r in json.loads(one.version.tags["sql.windows"])] == [4950, 50]


def test_the_tail_of_a_first_import_is_1_percent_of_its_range_or_the_lag() -> None:
    assert w.tail_cut(1, 10_001, 0) == 9901
    assert w.tail_cut(1, 10_001, 500) == 9501  # the lag is longer
    assert w.tail_cut(1, 11, 0) == 10  # rounded up to a whole id
    assert w.tail_cut(7, 8, 0) is None  # one value: one window
    assert w.tail_cut(9, 8, 0) is None  # nothing under the end
    day = dt.timedelta(days=1)
    assert w.tail_cut(dt.date(2026, 1, 1), dt.date(2026, 3, 1), dt.timedelta(0)) == dt.date(
        2026, 2, 28
    )
    assert w.tail_cut(dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.timedelta(0)) is None
    assert w.tail_cut(dt.date(2025, 1, 1), dt.date(2026, 1, 1), 7 * day) == dt.date(2025, 12, 25)
    start = dt.datetime(2026, 3, 1, tzinfo=UTC)
    assert w.tail_cut(start, start + 100 * day, dt.timedelta(0)) == start + 99 * day
    # 1 % of 10 minutes is 6 s; 1 % of 10 min 1 s is 6.01 s, rounded up to 7 s
    minutes = dt.timedelta(minutes=10)
    assert w.tail_cut(start, start + minutes, dt.timedelta(0)) == start + minutes - (
        dt.timedelta(seconds=6)
    )
    end = start + minutes + dt.timedelta(seconds=1)
    assert w.tail_cut(start, end, dt.timedelta(0)) == end - dt.timedelta(seconds=7)


def test_verify_all_finds_late_rows_in_any_window(client: Client, lite: Lite) -> None:
    lite.execute("CREATE TABLE t (id INTEGER, day DATE);")
    days = [(i, f"2026-03-{d:02d}") for i, d in enumerate(range(1, 11))]
    lite.execute("INSERT INTO t VALUES (?, ?)", days)
    source = SqlSource(
        connection="lite",
        query="SELECT * FROM t",
        incremental=Incremental(column="day", start="2026-03-01", window=86400 * 3),
    )
    clock = Clock(dt.datetime(2026, 3, 8, 12, tzinfo=UTC))
    first = run(client, source, clock)
    assert first.windows == [
        "[2026-03-01, 2026-03-04)",
        "[2026-03-04, 2026-03-07)",
        "[2026-03-07, 2026-03-08)",
    ]
    assert first.rows == 7 and first.version is not None and len(first.version.files) == 3
    lite.execute("INSERT INTO t VALUES (?, ?)", [(99, "2026-03-02")])
    clock.now = dt.datetime(2026, 3, 9, 12, tzinfo=UTC)
    checked_last = run(client, source, clock)  # the late row is in the first window
    assert checked_last.committed and checked_last.rows == 1
    lite.execute("INSERT INTO t VALUES (?, ?)", [(100, "2026-03-05")])
    every = source.model_copy(
        update={"incremental": source.incremental.model_copy(update={"verify": "all"})}  # type: ignore[union-attr]
    )
    with pytest.raises(Conflict, match="not monotonic") as refused:
        run(client, every, clock)
    assert "window [2026-03-01, 2026-03-04) held 3 rows" in refused.value.message
    assert "window [2026-03-04, 2026-03-07) held 3 rows" in refused.value.message
    assert refused.value.details["values"] == ["2026-03-02", "2026-03-05"]


def test_backfill_replaces_whole_windows_only(client: Client, lite: Lite) -> None:
    lite.execute("CREATE TABLE t (id INTEGER, v TEXT);")
    lite.execute("INSERT INTO t VALUES (?, ?)", [(i, "old") for i in range(1, 101)])
    source = SqlSource(
        connection="lite",
        query="SELECT * FROM t",
        incremental=Incremental(column="id", start=1, window=50),
    )
    first = client.import_sql("team/events", source)
    assert first.windows == ["[1, 51)", "[51, 101)"]
    with pytest.raises(InvalidInput, match=r"cuts through the imported window \[1, 51\)"):
        client.import_sql("team/events", source, backfill=(25, 75))
    lite.execute("UPDATE t SET v = 'new' WHERE id > 50;")
    again = client.import_sql("team/events", source, backfill=(51, 101))
    assert again.windows == ["[51, 101)"] and again.version is not None
    rows = table(client, again.version.ref)
    assert len(rows) == 100 and {r["v"] for r in rows if r["id"] > 50} == {"new"}
    whole = client.import_sql("team/events", source, backfill=(None, 101))
    assert whole.windows == ["[-inf, 51)", "[51, 101)"]


def test_incremental_bad_input_commits_nothing(client: Client, lite: Lite) -> None:
    lite.execute("CREATE TABLE t (id INTEGER, other INTEGER, name TEXT);")
    lite.execute("INSERT INTO t VALUES (?, ?, ?)", [(1, 1, "a"), (None, 2, "b")])
    by_id = SqlSource(
        connection="lite", query="SELECT * FROM t", incremental=Incremental(column="id")
    )
    with pytest.raises(Conflict, match="NULL in 1 rows"):
        client.import_sql("team/events", by_id)
    lite.execute("DELETE FROM t WHERE id IS NULL;")
    assert client.import_sql("team/events", by_id).committed
    by_other = by_id.model_copy(update={"incremental": Incremental(column="other")})
    with pytest.raises(Conflict, match="imported by watermark column 'id', not 'other'"):
        client.import_sql("team/events", by_other)
    lite.execute("INSERT INTO t VALUES (?, ?, ?)", [(5, 5, "c")])
    fewer = by_id.model_copy(update={"query": "SELECT id, name FROM t"})
    with pytest.raises(InvalidInput, match="columns or types changed"):
        client.import_sql("team/events", fewer)
    snapshot = SqlSource(connection="lite", query="SELECT * FROM t")
    client.import_sql("team/plain", snapshot)
    with pytest.raises(Conflict, match="was not made by an incremental import"):
        client.import_sql("team/plain", by_id)
    with pytest.raises(InvalidInput, match="a backfill needs an incremental source"):
        client.import_sql("team/plain", snapshot, backfill=(1, 2))
    assert len(client.list_versions("team/events", kind="dataset")) == 1
