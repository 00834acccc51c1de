"""Named parameters: found outside literals and comments, bound in each driver's style."""

from __future__ import annotations

import pytest

from modelyard.errors import InvalidInput
from modelyard.sql.params import bind, check_params, scan

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
