"""PostgreSQL through ADBC: the server's binary COPY decoded straight into Arrow, in C.

The fastest path (no Python object per value), chosen by default when
``adbc-driver-postgresql`` is installed. ADBC hands numerics over as their text, tagged with the
column's type modifier: a ``numeric(p, s)`` becomes a decimal of that precision and scale here,
and a numeric without one stays its exact text, as the cursor engine does.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from modelyard.errors import InvalidInput
from modelyard.sql.connections import Target
from modelyard.sql.engines.base import Batches, Engine, Session, check_storable, map_error
from modelyard.sql.engines.postgres import (
    NO_QUERY_CACHE,
    begin_statement,
    libpq_url,
    numeric_from_typmod,
    timeout_statement,
    to_decimal,
)
from modelyard.sql.params import bind

_PG_TYPE = b"POSTGRESQL:type"
_TYPMOD = b"POSTGRESQL:typmod"


class AdbcPostgres(Engine):
    name = "adbc"
    description = "PostgreSQL through ADBC (Arrow-native, binary COPY)"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("adbc_driver_postgresql") is not None

    def open(self, target: Target, timeout_seconds: float | None) -> Session:
        try:
            import adbc_driver_postgresql.dbapi as dbapi
        except ImportError as exc:
            raise InvalidInput(
                "the adbc engine needs adbc-driver-postgresql: pip install 'modelyard[sql]', "
                "or use engine 'psycopg'"
            ) from exc
        try:
            conn = dbapi.connect(libpq_url(target, with_password=True), autocommit=False)
        except dbapi.Error as exc:
            raise map_error(exc, target, "connecting", getattr(exc, "sqlstate", None)) from None
        return _AdbcSession(conn, target, timeout_seconds)


class _AdbcSession(Session):
    def __init__(self, conn: Any, target: Target, timeout_seconds: float | None) -> None:
        self.conn = conn
        self.target = target
        self._error = _error_type()
        self.cursor = conn.cursor()
        try:
            self._run(begin_statement(target))
            if timeout_seconds:
                self._run(timeout_statement(timeout_seconds))
            self.server_version = str(self.first_row("SELECT current_setting('server_version')")[0])
        except BaseException:
            self.close()
            raise

    def _run(self, statement: str) -> None:
        try:
            self.cursor.execute(statement)
        except self._error as exc:
            raise map_error(exc, self.target, "querying", getattr(exc, "sqlstate", None)) from None

    def first_row(self, query: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        text, args = bind(NO_QUERY_CACHE + query, params or {}, "numeric")
        try:
            self.cursor.execute(text, args or None)
            row = self.cursor.fetchone()
        except self._error as exc:
            raise map_error(exc, self.target, "querying", getattr(exc, "sqlstate", None)) from None
        return tuple(row) if row is not None else ()

    def stream(
        self,
        query: str,
        params: Mapping[str, Any],
        batch_rows: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Batches:
        text, args = bind(NO_QUERY_CACHE + query, params, "numeric")
        try:
            self.cursor.execute(text, args or None)
            reader = self.cursor.fetch_record_batch()
        except self._error as exc:
            raise map_error(exc, self.target, "querying", getattr(exc, "sqlstate", None)) from None
        fields, convert = _plan(reader.schema)
        schema = pa.schema(fields)
        check_storable(schema, _native(reader.schema))

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for batch in reader:
                    columns = [
                        fix(batch.column(i)) if fix else batch.column(i)
                        for i, fix in enumerate(convert)
                    ]
                    yield pa.RecordBatch.from_arrays(columns, schema=schema)
            except (self._error, pa.ArrowException, OSError) as exc:  # errors of the stream
                raise map_error(
                    exc, self.target, "querying", getattr(exc, "sqlstate", None)
                ) from None

        return Batches(schema, batches())

    def close(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        with contextlib.suppress(Exception):  # a broken connection: closing is all that is left
            conn.rollback()
        with contextlib.suppress(Exception):
            conn.close()


def _error_type() -> type[Exception]:
    import adbc_driver_manager

    error: type[Exception] = adbc_driver_manager.Error
    return error


def _native(schema: pa.Schema) -> dict[str, str]:
    names = {}
    for field in schema:
        meta = field.metadata or {}
        if _PG_TYPE in meta:
            names[field.name] = meta[_PG_TYPE].decode()
    return names


def _plan(schema: pa.Schema) -> tuple[list[pa.Field], list[Any]]:
    """The plain fields of the parts, and per column the conversion it needs (or None)."""
    fields: list[pa.Field] = []
    convert: list[Any] = []
    for field in schema:
        meta = field.metadata or {}
        kind = field.type
        fix = None
        if meta.get(_PG_TYPE) == b"numeric" and isinstance(kind, pa.BaseExtensionType):
            target = numeric_from_typmod(int(meta.get(_TYPMOD, b"-1")))
            kind = target

            def fix(array: pa.Array, name: str = field.name, to: pa.DataType = target) -> pa.Array:
                text = array.storage
                return text if pa.types.is_string(to) else to_decimal(name, text, to)

        fields.append(pa.field(field.name, kind, True))
        convert.append(fix)
    return fields, convert
