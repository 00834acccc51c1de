"""Any other database, by its SQLAlchemy URL (``mysql+pymysql://...``, ``mssql+pyodbc://...``).

The generic path: the dialect's driver streams rows (``stream_results``) in a transaction at
REPEATABLE READ, or SERIALIZABLE where the dialect knows no repeatable read, which is rolled back
at the end. Column types come from the values of the first batch (decimals take the precision
the driver reports), unless the source names them in ``types``; later batches are cast to them.
Read-only is what the connection's user may do: give it a user that may only read.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import InvalidInput
from modelyard.sql.connections import Target
from modelyard.sql.engines.base import Batches, Engine, Session, map_error
from modelyard.sql.params import bind


class SqlAlchemyEngine(Engine):
    name = "sqlalchemy"
    description = "any database with a SQLAlchemy dialect (generic, row by row)"

    def open(
        self, target: Target, timeout_seconds: float | None, snapshot: str | None = None
    ) -> Session:
        import sqlalchemy as sa

        url = sa.engine.make_url(target.url)
        if target.password is not None:
            url = url.set(password=target.password)
        try:
            engine = sa.create_engine(url, connect_args=dict(target.options), poolclass=sa.NullPool)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise InvalidInput(f"{target.describe()}: {target.redact(str(exc))}") from None
        try:
            conn = engine.connect()
            for level in ("REPEATABLE READ", "SERIALIZABLE"):
                try:
                    conn = conn.execution_options(isolation_level=level)
                    break
                except sa.exc.ArgumentError:
                    continue
            conn.begin()
        except sa.exc.DBAPIError as exc:
            engine.dispose()
            raise map_error(exc.orig or exc, target, "connecting") from None
        return _GenericSession(engine, conn, target)


class _GenericSession(Session):
    def __init__(self, engine: Any, conn: Any, target: Target) -> None:
        self.engine, self.conn, self.target = engine, conn, target
        info = engine.dialect.server_version_info
        name = engine.dialect.name
        self.server_version = f"{name} {'.'.join(map(str, info))}" if info else name
        self._preparer = engine.dialect.identifier_preparer

    def quote(self, identifier: str) -> str:
        return str(self._preparer.quote_identifier(identifier))

    def _execute(self, query: str, params: Mapping[str, Any], stream: bool) -> Any:
        import sqlalchemy as sa

        text, args = bind(query, params, "sqlalchemy")
        conn = self.conn.execution_options(stream_results=True) if stream else self.conn
        try:
            return conn.execute(sa.text(text), args)
        except sa.exc.DBAPIError as exc:
            raise map_error(exc.orig or exc, self.target, "querying") from None

    def first_row(self, query: str, params: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        row = self._execute(query, params or {}, False).fetchone()
        return tuple(row) if row is not None else ()

    def stream(
        self,
        query: str,
        params: Mapping[str, Any],
        batch_rows: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Batches:
        import sqlalchemy as sa

        result = self._execute(query, params, True)
        names = list(result.keys())
        description = result.cursor.description if result.cursor is not None else None

        def fetch() -> list[Any]:
            try:
                return list(result.fetchmany(batch_rows))
            except sa.exc.DBAPIError as exc:
                raise map_error(exc.orig or exc, self.target, "querying") from None

        first = fetch()
        columns = list(zip(*first, strict=True)) if first else [() for _ in names]
        named = types or {}
        kinds = [
            named.get(name) or _infer(name, values, description[i] if description else None)
            for i, (name, values) in enumerate(zip(names, columns, strict=True))
        ]
        schema = pa.schema([pa.field(n, k, True) for n, k in zip(names, kinds, strict=True)])

        def batches() -> Iterator[pa.RecordBatch]:
            rows = first
            while rows:
                data = list(zip(*rows, strict=True))
                arrays = [_array(n, v, k) for n, v, k in zip(names, data, kinds, strict=True)]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
                rows = fetch()

        return Batches(schema, batches())

    def close(self) -> None:
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        try:
            conn.rollback()
            conn.close()
        finally:
            self.engine.dispose()


def _infer(name: str, values: Sequence[Any], description: Sequence[Any] | None) -> pa.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, decimal.Decimal) for v in present):
        precision = description[4] if description and len(description) > 5 else None
        scale = description[5] if description and len(description) > 5 else None
        if isinstance(precision, int) and isinstance(scale, int) and 0 < precision <= 76:
            return (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale)
    if present and all(isinstance(v, dt.datetime) for v in present):
        aware = present[0].tzinfo is not None
        return pa.timestamp("us", "UTC" if aware else None)
    try:
        kind = pa.array(present).type if present else pa.null()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInput(
            f"column {name!r} holds values of several types ({exc}): CAST it in the query or "
            "name its type in the source's types"
        ) from None
    return kind


def _array(name: str, values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    try:  # values of another type (text of timestamps, say) that Arrow casts exactly
        return pc.cast(pa.array(values), kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError) as exc:
        raise InvalidInput(
            f"column {name!r} ({kind}) holds a value that is not one: {exc}; name its type in "
            "the source's types"
        ) from None
