"""SQLite, the embedded default: a ``sqlite:///PATH`` connection needs nothing installed.

The file is opened read-only (``mode=ro`` and ``PRAGMA query_only``) and the import runs in one
transaction, which in SQLite is serializable. SQLite values carry no column type, so the types
come from the declared types of the columns the query selects (``BOOLEAN``, ``TIMESTAMP``,
``DATE``, ``JSON``, ``DECIMAL(p, s)`` ...), read through a temporary view; an expression has no
declared type and is typed by its values, or by ``types`` in the source.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pyarrow as pa

from modelyard.errors import InvalidInput, NotFound
from modelyard.sql.connections import Target
from modelyard.sql.engines.base import Batches, Engine, Session, map_error
from modelyard.sql.params import bind, scan

_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)", re.I)


def declared_type(decl: str) -> pa.DataType | None:
    """The Arrow type of a declared SQLite column type; None for no declared type."""
    text = decl.strip().upper()
    if not text:
        return None
    if match := _DECIMAL.match(text):
        precision, scale = int(match[1]), int(match[2] or 0)
        return (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale)
    if "BOOL" in text:
        return pa.bool_()
    if "TIMESTAMPTZ" in text or "WITH TIME ZONE" in text:
        return pa.timestamp("us", "UTC")
    if "TIMESTAMP" in text or "DATETIME" in text:
        return pa.timestamp("us")
    if text == "DATE":
        return pa.date32()
    if text in ("JSON", "JSONB"):
        return pa.json_()
    if text == "UUID":
        return pa.uuid()
    # SQLite's own affinity rules (https://sqlite.org/datatype3.html, 3.1)
    if "INT" in text:
        return pa.int64()
    if any(word in text for word in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if "BLOB" in text:
        return pa.binary()
    if any(word in text for word in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    return None


def inferred_type(values: Sequence[Any]) -> pa.DataType:
    """The type of an expression column, from the values of its first batch."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.null()
    if kinds == {int}:
        return pa.int64()
    if kinds <= {int, float}:
        return pa.float64()
    if kinds == {str}:
        return pa.string()
    if kinds == {bytes}:
        return pa.binary()
    raise InvalidInput(
        f"an expression column holds values of several types "
        f"({', '.join(sorted(k.__name__ for k in kinds))}): CAST it in the query or name its "
        "type in the source's types"
    )


class SqliteEngine(Engine):
    name = "sqlite"
    description = "SQLite files (the standard library's sqlite3)"

    def open(
        self, target: Target, timeout_seconds: float | None, snapshot: str | None = None
    ) -> Session:
        path = sqlite_path(target.url)
        if not path.is_file():
            raise NotFound(f"{target.describe()}: there is no database file at {path}")
        uri = f"file:{quote(str(path))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise map_error(exc, target, "connecting") from None
        return _SqliteSession(conn, target, timeout_seconds)


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative`` or ``sqlite:////absolute`` (SQLAlchemy's spelling) as a path."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidInput(f"{url!r}: a SQLite URL is sqlite:///PATH")
    path = unquote(parts.path)
    return Path(path[1:] if path.startswith("/") else path).expanduser()


class _SqliteSession(Session):
    def __init__(self, conn: sqlite3.Connection, target: Target, timeout: float | None) -> None:
        self.conn: sqlite3.Connection | None = conn
        self.target = target
        self.server_version = f"SQLite {sqlite3.sqlite_version}"
        self._types: dict[str, pa.DataType] = {}
        if timeout:
            deadline = time.monotonic() + timeout
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        conn.execute("PRAGMA query_only = 1")
        conn.execute("BEGIN")

    def _conn(self) -> sqlite3.Connection:
        assert self.conn is not None, "the session is closed"
        return self.conn

    def first_row(self, query: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        text, args = bind(query, params or {}, "named")
        try:
            row = self._conn().execute(text, args).fetchone()
        except sqlite3.Error as exc:
            raise map_error(exc, self.target, "querying") from None
        return tuple(row) if row is not None else ()

    def stream(
        self,
        query: str,
        params: Mapping[str, Any],
        batch_rows: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Batches:
        declared = {**self._declared_types(query), **(types or {})}
        text, args = bind(query, params, "named")
        try:
            cursor = self._conn().execute(text, args)
        except sqlite3.Error as exc:
            raise map_error(exc, self.target, "querying") from None
        names = [d[0] for d in cursor.description]

        def fetch() -> list[Any]:
            try:
                return cursor.fetchmany(batch_rows)
            except sqlite3.Error as exc:
                raise map_error(exc, self.target, "querying") from None

        first = fetch()
        columns = list(zip(*first, strict=True)) if first else [() for _ in names]
        kinds = [
            declared.get(name) or _infer(name, values)
            for name, values in zip(names, columns, strict=True)
        ]
        schema = pa.schema([pa.field(n, k, True) for n, k in zip(names, kinds, strict=True)])
        converts = [_converter(n, k) for n, k in zip(names, kinds, strict=True)]

        def batches() -> Iterator[pa.RecordBatch]:
            rows = first
            while rows:
                data = list(zip(*rows, strict=True))
                yield pa.RecordBatch.from_arrays(
                    [c(v) for c, v in zip(converts, data, strict=True)], schema=schema
                )
                rows = fetch()

        return Batches(schema, batches())

    def _declared_types(self, query: str) -> dict[str, pa.DataType]:
        """Declared types of the result's columns, read from a temporary view of the query (its
        parameters replaced by NULL: a view takes none, and types do not depend on them)."""
        placeholders, _ = scan(query)
        text, cursor = [], 0
        for p in placeholders:
            text.append(query[cursor : p.start] + "NULL")
            cursor = p.end
        text.append(query[cursor:])
        view = f"modelyard_types_{uuid.uuid4().hex[:12]}"
        conn = self._conn()
        try:
            conn.execute("PRAGMA query_only = 0")  # temp objects only: the file is read-only
            conn.execute(f"CREATE TEMP VIEW {view} AS {''.join(text)}")
            rows = conn.execute(f"PRAGMA temp.table_info({view})").fetchall()
            conn.execute(f"DROP VIEW temp.{view}")
        except sqlite3.Error:
            return {}  # the query itself will say what is wrong with it
        finally:
            conn.execute("PRAGMA query_only = 1")
        found = {}
        for row in rows:
            kind = declared_type(row[2] or "")
            if kind is not None:
                found[row[1]] = kind
        return found

    def close(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


def _infer(name: str, values: Sequence[Any]) -> pa.DataType:
    try:
        return inferred_type(values)
    except InvalidInput as exc:
        raise InvalidInput(f"column {name!r}: {exc.message}") from None


def _converter(name: str, kind: pa.DataType) -> Callable[[Sequence[Any]], pa.Array]:
    parse: Callable[[Any], Any] | None = None
    storage = kind
    if pa.types.is_timestamp(kind):
        parse = _timestamp(kind.tz is not None)
    elif pa.types.is_date(kind):
        parse = _date
    elif pa.types.is_boolean(kind):
        parse = _boolean
    elif pa.types.is_decimal(kind):
        parse = _decimal
    elif isinstance(kind, pa.BaseExtensionType):
        storage = kind.storage_type
        if kind.extension_name == "arrow.uuid":
            parse = _uuid

    def convert(values: Sequence[Any]) -> pa.Array:
        try:
            items = [None if v is None else parse(v) for v in values] if parse else values
            array = pa.array(items, storage)
        except (ValueError, TypeError, decimal.InvalidOperation, pa.ArrowException) as exc:
            raise InvalidInput(
                f"column {name!r} ({kind}) holds a value that is not one: {exc}; CAST it in the "
                "query or name its type in the source's types"
            ) from None
        if storage is not kind:
            return pa.ExtensionArray.from_storage(kind, array)
        return array

    return convert


def _timestamp(aware: bool) -> Callable[[Any], dt.datetime]:
    def parse(value: Any) -> dt.datetime:
        if isinstance(value, int | float):
            moment = dt.datetime.fromtimestamp(value, dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(str(value))
        if aware:
            return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment
        return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment

    return parse


def _date(value: Any) -> dt.date:
    return dt.date.fromisoformat(str(value)[:10])


def _boolean(value: Any) -> bool:
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes"):
        return True
    if text in ("0", "false", "f", "no"):
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _decimal(value: Any) -> decimal.Decimal:
    return decimal.Decimal(str(value)) if isinstance(value, float) else decimal.Decimal(value)


def _uuid(value: Any) -> bytes:
    return value if isinstance(value, bytes) else uuid.UUID(str(value)).bytes
