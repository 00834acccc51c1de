"""Named parameters: found outside literals and comments, bound in each driver's style."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow.parquet as pq
import pytest

from modelyard.client import Client
from modelyard.errors import InvalidInput
from modelyard.sql.params import bind, bind_text, check_params, scan, setting_placeholder
from modelyard.sql.source import SqlSource
from modelyard.types import ModelRef
from tests.sql.conftest import Pg

TRICKY = """
SELECT a::int, ':quoted' AS s, E'it\\'s :escaped', "col:umn", $$ :dollar $$, $tag$ :x $tag$,
       arr[1:2], b -- :comment
FROM t /* :block /* :nested */ still */ WHERE a = :first AND b = :second_2 OR c = :first
"""


def test_placeholders_outside_literals_comments_and_casts() -> None:
    assert [p.name for p in scan(TRICKY)[0]] == ["first", "second_2", "first"]
    assert check_params(TRICKY, {"first": 1, "second_2": 2}) == ["first", "second_2"]


def test_each_driver_gets_its_own_style() -> None:
    sql = "SELECT '%' || :name, :n::int WHERE x LIKE '%:no' AND y = :name"
    params = {"name": "a", "n": 1}
    assert bind(sql, params, "named") == (sql, params)
    assert bind(sql, params, "numeric") == (
        "SELECT '%' || $1, $2::int WHERE x LIKE '%:no' AND y = $1",
        ("a", 1),
    )
    assert bind(sql, params, "pyformat") == (
        "SELECT '%%' || %(name)s, %(n)s::int WHERE x LIKE '%%:no' AND y = %(name)s",
        params,
    )
    text, _ = bind(sql, params, "sqlalchemy")
    assert text == "SELECT '%' || :name, :n::int WHERE x LIKE '%\\:no' AND y = :name"


@pytest.mark.parametrize(
    ("params", "message"),
    [({}, "uses parameter :a, which was not given"), ({"a": 1, "b": 2}, "'b' is given")],
)
def test_missing_and_unused_parameters_are_refused(params: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        bind("SELECT :a", params, "named")


def test_values_bound_as_text_typed_as_the_driver_binds_them() -> None:
    sql = "SELECT ':a' AS s WHERE x = :a AND y > :b OR z = :a"
    params = {"a": 7, "b": dt.datetime(2026, 3, 28, 10, tzinfo=dt.UTC)}
    moved = bind_text(sql, params, lambda n, kind: f"${n}::{kind}")
    assert moved == (
        "SELECT ':a' AS s WHERE x = $1::int8 AND y > $2::timestamptz OR z = $1::int8",
        ["7", "2026-03-28T10:00:00+00:00"],
    )
    moved = bind_text("SELECT :a", {"a": 1.5}, setting_placeholder)
    assert moved == ("SELECT (SELECT current_setting('modelyard.p1')::float8)", ["1.5"])
    assert bind_text("SELECT :a", {"a": object()}, setting_placeholder) is None


def test_postgres_reads_every_kind_of_value_exactly_as_bound(client: Client, pg: Pg) -> None:
    """The ADBC engine hands bound values to the query through settings (so that the result
    streams): each must come back exactly, and a hostile text stays a value."""
    params = {
        "i": 2**40 + 1,
        "f": 0.1,
        "t": "it's :x -- ü'; DROP TABLE t; --",
        "b": True,
        "n": decimal.Decimal("12345.678901234567890"),
        "tz": dt.datetime(
            2026, 3, 28, 10, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))
        ),
        "ts": dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
        "d": dt.date(2024, 2, 29),
    }
    pg.execute("CREATE TABLE t (id int8)")
    pg.execute("INSERT INTO t VALUES (1), (2)")
    names = ", ".join(f":{name} AS {name}" for name in params)
    source = SqlSource(connection="pg", query=f"SELECT {names} FROM t WHERE id < :i", params=params)
    result = client.import_sql("team/params", source)
    assert result.engine == "adbc" and result.rows == 2
    folder = client.pull(ModelRef.parse("team/params@1"), kind="dataset")
    row = pq.read_table(folder).to_pylist()[0]
    assert row == {**params, "n": "12345.678901234567890"}
