"""PostgreSQL through psycopg: a server-side cursor (DECLARE, then FETCH) into Arrow batches.

The path when ADBC is not installed (and the one for Redshift). The server keeps the result and
hands over ``batch_rows`` rows a fetch, so memory stays bounded; each batch goes through Python
objects, which makes it several times slower than ADBC, never different: numerics, JSON and
UUIDs are read as the server's exact text and converted the way the ADBC engine converts them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from modelyard.errors import InvalidInput
from modelyard.sql.connections import Target
from modelyard.sql.engines.base import Batches, Engine, Session, map_error
from modelyard.sql.engines.postgres import (
    NO_QUERY_CACHE,
    PostgresSession,
    decimal_type,
    libpq_url,
    opening_statements,
    to_decimal,
)
from modelyard.sql.params import bind

Convert = Callable[[Sequence[Any]], pa.Array]
_SCALARS: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "char": pa.string(),
    "citext": pa.string(),
    "bytea": pa.binary(),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", "UTC"),
}
_AS_TEXT = ("numeric", "json", "jsonb", "uuid")


class CursorPostgres(Engine):
    name = "psycopg"
    description = "PostgreSQL or Redshift through a psycopg server-side cursor"
    prefetch = True
    splits = True

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("psycopg") is not None

    def open(
        self, target: Target, timeout_seconds: float | None, snapshot: str | None = None
    ) -> Session:
        try:
            import psycopg
            from psycopg.types.string import TextLoader
        except ImportError as exc:
            raise InvalidInput(
                "the psycopg engine needs psycopg: pip install 'modelyard[sql]'"
            ) from exc
        try:
            conn = psycopg.connect(
                libpq_url(target, with_password=False),
                password=target.password,
                prepare_threshold=None,  # no named prepared statements: pgbouncer-safe
                autocommit=False,
            )
        except psycopg.Error as exc:
            raise map_error(exc, target, "connecting", exc.sqlstate) from None
        for name in _AS_TEXT:  # the server's exact text, converted below
            conn.adapters.register_loader(name, TextLoader)
        return _CursorSession(conn, target, timeout_seconds, snapshot)


class _CursorSession(PostgresSession):
    def __init__(
        self, conn: Any, target: Target, timeout_seconds: float | None, snapshot: str | None
    ) -> None:
        import psycopg

        self.conn = conn
        self.target = target
        self._error = psycopg.Error
        self._cursors = 0
        try:
            for statement in opening_statements(target, timeout_seconds, snapshot):
                self._execute(conn.cursor(), statement, None)
            self.server_version = str(self.first_row("SELECT current_setting('server_version')")[0])
        except BaseException:
            self.close()
            raise

    def _execute(self, cursor: Any, query: str, params: Any) -> None:
        try:
            cursor.execute(query, params)
        except self._error as exc:
            raise map_error(exc, self.target, "querying", exc.sqlstate) from None

    def first_row(self, query: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        text, args = bind(NO_QUERY_CACHE + query, params or {}, "pyformat")
        cursor = self.conn.cursor()
        self._execute(cursor, text, args or None)
        row = cursor.fetchone()
        return tuple(row) if row is not None else ()

    def stream(
        self,
        query: str,
        params: Mapping[str, Any],
        batch_rows: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Batches:
        text, args = bind(query, params, "pyformat")
        self._cursors += 1
        # DECLARE and FETCH as plain statements, not psycopg's named cursor: that one asks for
        # the portal's description, which pgpool-II cannot answer for a DECLAREd cursor.
        name = f"modelyard_import_{self._cursors}"
        fetch = f"{NO_QUERY_CACHE}FETCH FORWARD {int(batch_rows)} FROM {name}"
        cursor = self.conn.cursor()
        self._execute(cursor, f"{NO_QUERY_CACHE}DECLARE {name} NO SCROLL CURSOR FOR {text}", args)
        self._execute(cursor, fetch, None)
        fields: list[pa.Field] = []
        converts: list[Convert] = []
        for column in cursor.description:
            kind, convert = self._column(column)
            fields.append(pa.field(column.name, kind, True))
            converts.append(convert)
        schema = pa.schema(fields)

        def batches() -> Iterator[pa.RecordBatch]:
            while True:
                rows = cursor.fetchall()
                if not rows:
                    self._execute(cursor, f"CLOSE {name}", None)
                    return
                columns = list(zip(*rows, strict=True))
                yield pa.RecordBatch.from_arrays(
                    [convert(values) for convert, values in zip(converts, columns, strict=True)],
                    schema=schema,
                )
                self._execute(cursor, fetch, None)

        return Batches(schema, batches())

    def _column(self, column: Any) -> tuple[pa.DataType, Convert]:
        name: str = column.name
        info = self.conn.adapters.types.get(column.type_code)
        type_name = info.name if info is not None else self._type_name(column.type_code)
        is_array = info is not None and column.type_code == info.array_oid
        if is_array:
            element = _SCALARS.get(type_name)
            if element is None:
                raise _unsupported(name, f"{type_name}[]")
            kind = pa.list_(element)
            return kind, _plain(name, kind)
        if type_name == "numeric":
            if column.precision is None:
                return pa.string(), _plain(name, pa.string())
            kind = decimal_type(column.precision, column.scale or 0)
            return kind, lambda values: to_decimal(name, pa.array(values, pa.string()), kind)
        if type_name in ("json", "jsonb"):
            return pa.json_(), lambda values: pa.ExtensionArray.from_storage(
                pa.json_(), pa.array(values, pa.string())
            )
        if type_name == "uuid":
            return pa.uuid(), lambda values: pa.ExtensionArray.from_storage(
                pa.uuid(),
                pa.array(
                    [None if v is None else uuid.UUID(v).bytes for v in values], pa.binary(16)
                ),
            )
        kind = _SCALARS.get(type_name) or self._enum(column.type_code, name, type_name)
        return kind, _plain(name, kind)

    def _type_name(self, oid: int) -> str:
        row = self.first_row("SELECT format_type(:oid, NULL)", {"oid": oid})
        return str(row[0]) if row else str(oid)

    def _enum(self, oid: int, column: str, type_name: str) -> pa.DataType:
        row = self.first_row("SELECT typtype FROM pg_type WHERE oid = :oid", {"oid": oid})
        if row and row[0] == "e":
            return pa.string()
        raise _unsupported(column, type_name)

    def close(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        with contextlib.suppress(Exception):  # a broken connection: closing is all that is left
            conn.rollback()
        conn.close()


def _plain(name: str, kind: pa.DataType) -> Convert:
    def convert(values: Sequence[Any]) -> pa.Array:
        try:
            return pa.array(values, kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise InvalidInput(f"column {name!r} ({kind}) cannot be read: {exc}") from None

    return convert


def _uuids(values: Sequence[Any]) -> pa.Array:
    raw = [None if v is None else uuid.UUID(v).bytes for v in values]
    return pa.ExtensionArray.from_storage(pa.uuid(), pa.array(raw, pa.binary(16)))


def _unsupported(column: str, type_name: str) -> InvalidInput:
    return InvalidInput(
        f"column {column!r} has type {type_name}, which an import cannot store: cast it in the "
        f"query (e.g. {column}::text) or leave it out"
    )
