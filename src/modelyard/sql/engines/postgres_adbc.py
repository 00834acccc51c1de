"""PostgreSQL through ADBC: the server's binary COPY decoded straight into Arrow, in C.

The fastest path (no Python object per value), chosen by default when
``adbc-driver-postgresql`` is installed. The ``[sql]`` extra pins its 1.8.0: the wheels of
1.9.0 to 1.13.0 carry a build without inlining, whose decoding took 2.3 to 2.9 times the CPU of
1.8.0 on the benchmark's 10M rows (6.4 to 8.0 s, not 2.8 s), the server's side being the same.

What the driver's schema says of a column's type changed between those versions (1.8 marks
neither json nor a numeric's precision), so the columns' types come from the server's
description of the statement instead (:class:`~modelyard.sql.engines.postgres.Describer`): a
``numeric(p, s)`` becomes a decimal of that precision and scale, a numeric without one stays its
exact text, json is Arrow's json and a uuid Arrow's uuid, as the cursor engine makes them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import struct
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import pyarrow as pa

from modelyard.errors import InvalidInput
from modelyard.sql.connections import Target
from modelyard.sql.engines.base import Batches, Engine, Session, check_storable, map_error
from modelyard.sql.engines.postgres import (
    NO_QUERY_CACHE,
    Column,
    Describer,
    DriverError,
    PostgresSession,
    libpq_url,
    numeric_from_typmod,
    opening_statements,
    to_decimal,
)
from modelyard.sql.params import bind, bind_text, setting_placeholder


class AdbcPostgres(Engine):
    name = "adbc"
    description = "PostgreSQL through ADBC (Arrow-native, binary COPY)"
    prefetch = True
    splits = True

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("adbc_driver_postgresql") is not None

    def open(
        self, target: Target, timeout_seconds: float | None, snapshot: str | None = None
    ) -> Session:
        # The driver manager's low-level API: its DB-API module imports pyarrow.dataset (and
        # with it pandas), a fifth of a second of every import's start-up.
        try:
            import adbc_driver_manager as manager
            import adbc_driver_postgresql
        except ImportError as exc:
            raise InvalidInput(
                "the adbc engine needs adbc-driver-postgresql: pip install 'modelyard[sql]', "
                "or use engine 'psycopg'"
            ) from exc
        db = conn = None
        try:
            db = adbc_driver_postgresql.connect(libpq_url(target, with_password=True))
            conn = manager.AdbcConnection(db)
            conn.set_autocommit(False)
        except manager.Error as exc:
            for handle in (conn, db):
                if handle is not None:
                    with contextlib.suppress(Exception):
                        handle.close()
            raise map_error(exc, target, "connecting", getattr(exc, "sqlstate", None)) from None
        return _AdbcSession(db, conn, target, timeout_seconds, snapshot)


class _AdbcSession(PostgresSession):
    def __init__(
        self,
        db: Any,
        conn: Any,
        target: Target,
        timeout_seconds: float | None,
        snapshot: str | None,
    ) -> None:
        import adbc_driver_manager as manager

        self.db, self.conn = db, conn
        self.target = target
        self._error: type[Exception] = manager.Error
        self._statement: Any = None
        self._reader: pa.RecordBatchReader | None = None
        self._describer = Describer(target, timeout_seconds)
        try:
            self._statement = manager.AdbcStatement(conn)
            for statement in opening_statements(target, timeout_seconds, snapshot):
                self._run(statement)
            self.server_version = str(self.first_row("SELECT current_setting('server_version')")[0])
        except BaseException:
            self.close()
            raise

    def _execute(self, text: str, args: tuple[Any, ...] | None) -> pa.RecordBatchReader:
        """Run one statement; its result as it streams (ADBC's binary COPY when nothing is
        bound). Raises the driver's error."""
        if self._reader is not None:  # the last result, if left unread, is released first
            self._reader.close()
            self._reader = None
        statement = self._statement
        statement.set_sql_query(text)
        if args:
            names = [str(i) for i in range(len(args))]
            if all(isinstance(value, str) for value in args):
                columns = [_text(value) for value in args]
                statement.bind(pa.RecordBatch.from_arrays(columns, names=names))
            else:  # pa.record_batch imports pandas: only where a value has no text form
                statement.bind(pa.record_batch([[value] for value in args], names=names))
        handle, _ = _blocking(statement.execute_query, statement.cancel)
        self._reader = pa.RecordBatchReader._import_from_c(handle.address)
        return self._reader

    def _run(self, statement: str) -> None:
        try:
            self._execute(statement, None).read_all()
        except self._error as exc:
            raise map_error(exc, self.target, "querying", getattr(exc, "sqlstate", None)) from None

    def first_row(self, query: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        # Bound as text with casts: a small result, and planned with the values themselves.
        moved = bind_text(NO_QUERY_CACHE + query, params or {}, lambda n, kind: f"${n}::{kind}")
        text, args = (moved[0], tuple(moved[1])) if moved else self._bound(query, params or {})
        try:
            table = self._execute(text, args or None).read_all()
        except self._error as exc:
            raise map_error(exc, self.target, "querying", getattr(exc, "sqlstate", None)) from None
        return tuple(column[0].as_py() for column in table.columns) if table.num_rows else ()

    def stream(
        self,
        query: str,
        params: Mapping[str, Any],
        batch_rows: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Batches:
        text, args = self._bound(query, params)
        try:
            # Described before it runs: the description's lock on the tables is released before
            # the query takes its own, which an ALTER TABLE queued between them would wait for.
            columns = self._describer.columns(text)
            reader = self._execute(text, args or None)
        except (self._error, DriverError) as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            error = map_error(exc, self.target, "querying", sqlstate)
            raise _texts_hint(error, params, sqlstate) from None
        fields, convert = _plan(reader.schema, columns)
        schema = pa.schema(fields)
        check_storable(schema, {column.name: column.shown for column in columns})

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

    def _bound(self, query: str, params: Mapping[str, Any]) -> tuple[str, Any]:
        """The statement to stream and its bound values. ADBC streams a query without bound
        values through binary COPY, batch by batch; with bound values it reads the whole result
        into memory first (libpq's result, then Arrow). So the values go first into
        transaction-local settings (one small statement, the values bound by the driver as
        text) and the query reads them from there: no bound values, and a streamed result."""
        moved = bind_text(query, params, setting_placeholder) if params else None
        if moved is None:
            return bind(NO_QUERY_CACHE + query, params, "numeric")
        text, values = moved
        if values:
            calls = [f"set_config('modelyard.p{n}', ${n}, true)" for n in range(1, len(values) + 1)]
            try:
                statement = f"{NO_QUERY_CACHE}SELECT {', '.join(calls)}"
                self._execute(statement, tuple(values)).read_all()
            except self._error as exc:
                raise map_error(
                    exc, self.target, "querying", getattr(exc, "sqlstate", None)
                ) from None
        return NO_QUERY_CACHE + text, None

    def close(self) -> None:
        self._describer.close()
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        reader, self._reader = self._reader, None
        statement, self._statement = self._statement, None
        with contextlib.suppress(Exception):  # a broken connection: closing is all that is left
            if reader is not None:
                reader.close()
        with contextlib.suppress(Exception):
            if statement is not None:
                statement.close()
        with contextlib.suppress(Exception):
            conn.rollback()
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(Exception):
            self.db.close()


def _blocking(call: Any, cancel: Any) -> Any:
    """``call()``, which Ctrl-C cancels (the driver manager's helper, where it has one)."""
    try:
        from adbc_driver_manager._lib import _blocking_call
    except ImportError:  # an older driver manager: Ctrl-C waits for the statement
        return call()
    return _blocking_call(call, (), {}, cancel)


def _text(value: str) -> pa.Array:
    """A one-value string array, made from its buffers (``pa.array`` imports pandas)."""
    data = value.encode()
    offsets = struct.pack("<ii", 0, len(data))
    return pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _plan(schema: pa.Schema, columns: list[Column]) -> tuple[list[pa.Field], list[Any]]:
    """The plain fields of the parts, and per column the conversion it needs (or None), from
    the driver's schema and the server's description of the columns."""
    fields: list[pa.Field] = []
    convert: list[Any] = []
    for field, column in zip(schema, columns, strict=True):
        kind, fix = _converted(field.type, column)
        fields.append(pa.field(field.name, kind, True))
        convert.append(fix)
    return fields, convert


def _converted(kind: pa.DataType, column: Column) -> tuple[pa.DataType, Any]:
    """The type a column is stored as, and how its arrays become that (None: as they come).
    Numerics come as their exact text, json as text or Arrow's json, uuids as 16 bytes or
    Arrow's uuid, enums as their label's bytes: which one depends on the driver's version."""
    name, extension = column.name, isinstance(kind, pa.BaseExtensionType)
    if column.type_name == "numeric" and extension:
        to = numeric_from_typmod(column.typmod)

        def numeric(array: pa.Array) -> pa.Array:
            return array.storage if pa.types.is_string(to) else to_decimal(name, array.storage, to)

        return to, numeric
    if column.type_name in ("json", "jsonb") and not extension:
        return pa.json_(), lambda array: pa.ExtensionArray.from_storage(pa.json_(), array)
    if column.type_name == "uuid" and kind != pa.uuid() and extension:
        return pa.uuid(), lambda array: pa.ExtensionArray.from_storage(
            pa.uuid(), array.storage.cast(pa.binary(16))
        )
    if column.enum and extension:
        return pa.string(), lambda array: array.storage.cast(pa.string())
    if column.type_name in ("_json", "_jsonb", "_uuid") and pa.types.is_list(kind):
        element = replace(column, type_name=column.type_name[1:])
        to, fix = _converted(kind.value_type, element)
        if fix is not None:
            return pa.list_(to), lambda array: pa.ListArray.from_arrays(
                array.offsets, fix(array.values), mask=array.is_null() if array.null_count else None
            )
    return kind, None


def _texts_hint(error: Exception, params: Mapping[str, Any], sqlstate: str | None) -> Exception:
    """A type error where a string parameter (each ``--param``) is used: say that it is bound as
    ``text`` here, and how to cast it (the psycopg engine lets the server infer the type)."""
    texts = [f":{name}" for name, value in params.items() if isinstance(value, str)]
    if (
        not texts
        or (sqlstate or "").upper() not in ("42883", "42804")
        or not isinstance(error, InvalidInput)
    ):
        return error
    return InvalidInput(
        f"{error.message.rstrip('.')}. A string parameter ({', '.join(texts)}) is bound as "
        f"text: cast it where the query compares it with another type, e.g. {texts[0]}::numeric "
        f"or {texts[0]}::date"
    )
