"""Query parameters: written ``:name`` in every query, bound by the driver in its own style.

The SQL text is scanned once, skipping string literals (``'...'``, ``E'...'``), quoted
identifiers, comments (``--``, nested ``/* */``) and dollar-quoted bodies, so that a ``:name``
inside them, a PostgreSQL cast (``x::int``) or a positional ``$1`` is left alone. Each driver then
gets its own placeholders (``%(name)s`` for psycopg, ``$1`` for ADBC, ``:name`` for sqlite3 and
SQLAlchemy) and the values separately: a value is never formatted into the SQL.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelyard.errors import InvalidInput

ParamValue = str | int | float | bool | decimal.Decimal | dt.datetime | dt.date
Style = Literal["named", "pyformat", "numeric", "sqlalchemy"]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


@dataclass(frozen=True)
class Placeholder:
    start: int
    end: int
    name: str


def _skip_quoted(sql: str, i: int, quote: str, backslash: bool) -> int:
    """The index after the literal or identifier that starts at ``i``."""
    j = i + 1
    while j < len(sql):
        char = sql[j]
        if backslash and char == "\\":
            j += 2
            continue
        if char == quote:
            if j + 1 < len(sql) and sql[j + 1] == quote:  # '' or "" inside
                j += 2
                continue
            return j + 1
        j += 1
    return j


def scan(sql: str) -> tuple[list[Placeholder], list[tuple[int, int]]]:
    """The ``:name`` placeholders of ``sql``, and the spans of its literals and comments."""
    found: list[Placeholder] = []
    opaque: list[tuple[int, int]] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char == "'":
            escaped = i > 0 and sql[i - 1] in "eE" and (i < 2 or not sql[i - 2].isalnum())
            end = _skip_quoted(sql, i, "'", escaped)
        elif char == '"':
            end = _skip_quoted(sql, i, '"', False)
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            end = n if newline < 0 else newline
        elif sql.startswith("/*", i):
            depth, end = 1, i + 2
            while end < n and depth:
                if sql.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif sql.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
        elif char == "$" and (match := _DOLLAR_TAG.match(sql, i)) and not _in_word(sql, i):
            close = sql.find(match.group(0), match.end())
            end = n if close < 0 else close + len(match.group(0))
        elif char == ":":
            if sql.startswith("::", i):
                i += 2
                continue
            name = _IDENT.match(sql, i + 1)
            if name is not None and not (i > 0 and sql[i - 1] == ":"):
                found.append(Placeholder(i, name.end(), name.group(0)))
                i = name.end()
                continue
            i += 1
            continue
        else:
            i += 1
            continue
        opaque.append((i, end))
        i = end
    return found, opaque


def _in_word(sql: str, i: int) -> bool:
    """``a$b$`` is part of an identifier, not the start of a dollar quote."""
    return i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")


def check_params(sql: str, params: Mapping[str, Any]) -> list[str]:
    """The parameter names ``sql`` uses, in order of first use; every one must be given, and
    every one given must be used (a typo in a name would otherwise go unnoticed)."""
    names: list[str] = []
    for placeholder in scan(sql)[0]:
        if placeholder.name not in names:
            names.append(placeholder.name)
    missing = [name for name in names if name not in params]
    if missing:
        raise InvalidInput(
            f"the query uses parameter :{missing[0]}, which was not given: pass it "
            f"(--param {missing[0]}=VALUE)"
        )
    unused = sorted(set(params) - set(names))
    if unused:
        raise InvalidInput(
            f"parameter {unused[0]!r} is given but the query does not use :{unused[0]}"
        )
    return names


def bind(sql: str, params: Mapping[str, Any], style: Style) -> tuple[str, Any]:
    """``sql`` in the driver's placeholder style, and the values as that driver takes them."""
    check_params(sql, params)
    placeholders, opaque = scan(sql)
    if style == "named":
        return sql, dict(params)
    out: list[str] = []
    order: list[str] = []
    cursor = 0

    def text(start: int, end: int) -> str:
        chunk = sql[start:end]
        if style == "pyformat":
            return chunk.replace("%", "%%")
        if style == "sqlalchemy":
            # SQLAlchemy's text() would read ':x' inside a literal or comment as a parameter.
            pieces, last = [], start
            for a, b in opaque:
                if b <= start or a >= end:
                    continue
                lo, hi = max(a, start), min(b, end)
                pieces.append(sql[last:lo])
                pieces.append(sql[lo:hi].replace(":", "\\:"))
                last = hi
            pieces.append(sql[last:end])
            return "".join(pieces)
        return chunk

    for placeholder in placeholders:
        out.append(text(cursor, placeholder.start))
        name = placeholder.name
        if style == "pyformat":
            out.append(f"%({name})s")
        elif style == "numeric":
            if name not in order:
                order.append(name)
            out.append(f"${order.index(name) + 1}")
        else:
            out.append(f":{name}")
        cursor = placeholder.end
    out.append(text(cursor, len(sql)))
    if style == "numeric":
        return "".join(out), tuple(params[name] for name in order)
    return "".join(out), dict(params)


def _setting(value: Any) -> tuple[str, str] | None:
    """A value's PostgreSQL type (the one ADBC binds it as) and its exact text, or None."""
    if isinstance(value, bool):
        return "bool", "true" if value else "false"
    if isinstance(value, int):
        return "int8", str(value)
    if isinstance(value, float):
        return "float8", repr(value)  # the shortest text that reads back as the same double
    if isinstance(value, decimal.Decimal):
        return "numeric", str(value)
    if isinstance(value, str):
        return "text", value
    if isinstance(value, dt.datetime):
        return ("timestamptz" if value.tzinfo is not None else "timestamp"), value.isoformat()
    if isinstance(value, dt.date):
        return "date", value.isoformat()
    return None


def bind_text(
    sql: str, params: Mapping[str, Any], placeholder: Callable[[int, str], str]
) -> tuple[str, list[str]] | None:
    """``sql`` with each ``:name`` replaced by ``placeholder(n, type)`` (``n`` counts the
    parameters from 1 in order of first use, ``type`` is the PostgreSQL type the driver would
    bind the value as), and the values' exact texts in that order, to be bound as text: e.g.
    ``$1::int8`` and ``["7"]``. None when a value has no exact text form here."""
    check_params(sql, params)
    texts: dict[str, tuple[str, str]] = {}
    for name, value in params.items():
        setting = _setting(value)
        if setting is None:
            return None
        texts[name] = setting
    order: list[str] = []
    out: list[str] = []
    cursor = 0
    for found in scan(sql)[0]:
        out.append(sql[cursor : found.start])
        if found.name not in order:
            order.append(found.name)
        out.append(placeholder(order.index(found.name) + 1, texts[found.name][0]))
        cursor = found.end
    out.append(sql[cursor:])
    return "".join(out), [texts[name][1] for name in order]


def setting_placeholder(n: int, kind: str) -> str:
    """A parameter read from the transaction-local setting ``modelyard.p<n>``, which the
    database evaluates once per statement (an init plan) and an index scan can use."""
    return f"(SELECT current_setting('modelyard.p{n}')::{kind})"


def recorded(params: Mapping[str, ParamValue]) -> dict[str, str | int | float | bool]:
    """The parameters as a version records them: dates and times in ISO 8601, decimals as
    their exact text."""
    out: dict[str, str | int | float | bool] = {}
    for name, value in params.items():
        if isinstance(value, dt.date | dt.datetime):
            out[name] = value.isoformat()
        elif isinstance(value, decimal.Decimal):
            out[name] = str(value)
        else:
            out[name] = value
    return out
