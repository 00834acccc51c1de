"""What both PostgreSQL engines share: the connection string, the transaction, the types.

Poolers: the transaction is opened by the engine and every statement of an import runs in it, so
pgbouncer in transaction mode keeps them on one server connection; prepared statements are
unnamed or off (psycopg's ``prepare_threshold=None``), which pgbouncer's transaction mode needs.
Every statement starts with pgpool-II's ``/*NO QUERY CACHE*/`` hint, so an import never reads
a cached result of an older one.

Redshift speaks the same protocol and is read the same way (``redshift://`` URLs); it knows only
the serializable isolation level, which is what its transaction asks for. For large results,
Redshift's ``UNLOAD ('query') TO 's3://bucket/prefix/' IAM_ROLE '...' FORMAT PARQUET`` into the
blob store's bucket is the fast path (the cluster writes the parts in parallel); it needs a
Redshift cluster and its IAM role, so it is documented here and not built.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import InvalidInput
from modelyard.sql.connections import Target
from modelyard.sql.engines.base import Session

NO_QUERY_CACHE = "/*NO QUERY CACHE*/ "
SCHEMES = ("postgresql", "postgres", "redshift")


def libpq_url(target: Target, *, with_password: bool) -> str:
    """A libpq URL: the configured one with its scheme made ``postgresql`` and the connection's
    options as parameters (and the password, when ``with_password``)."""
    url = target.url_with_password() if with_password else target.url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({k: _option(v) for k, v in target.options.items()})
    query.setdefault("application_name", "modelyard-import")
    if parts.scheme.split("+", 1)[0] == "redshift":
        query.setdefault("port", str(parts.port or 5439))
    return urlunsplit(parts._replace(scheme="postgresql", query=urlencode(query)))


def _option(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def begin_statement(target: Target) -> str:
    """The first statement of the import's transaction."""
    level = "SERIALIZABLE" if target.scheme == "redshift" else "REPEATABLE READ"
    return f"SET TRANSACTION ISOLATION LEVEL {level}, READ ONLY"


def opening_statements(
    target: Target, timeout_seconds: float | None, snapshot: str | None
) -> list[str]:
    """What a session runs first: the transaction's mode, the snapshot it joins (a split
    import's further connections) and its statement timeout."""
    statements = [begin_statement(target)]
    if snapshot is not None:
        if not re.fullmatch(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+", snapshot):
            raise InvalidInput(f"not a snapshot id: {snapshot!r}")
        statements.append(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
    if timeout_seconds:
        statements.append(timeout_statement(timeout_seconds))
    return statements


class PostgresSession(Session):
    """What both PostgreSQL sessions share: a snapshot that other sessions can join."""

    def export_snapshot(self) -> str:
        (snapshot,) = self.first_row("SELECT pg_export_snapshot()", {})
        return str(snapshot)


def timeout_statement(seconds: float) -> str:
    return f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}"


def decimal_type(precision: int, scale: int) -> pa.DataType:
    return (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale)


def numeric_from_typmod(typmod: int) -> pa.DataType:
    """``numeric(p, s)`` as a decimal; a numeric without precision as its exact text."""
    if typmod < 4:
        return pa.string()
    precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
    return decimal_type(precision, scale)


def to_decimal(column: str, text: pa.Array, type: pa.DataType) -> pa.Array:
    """Exact text of numerics (what PostgreSQL sends) as decimals of the column's scale."""
    try:
        return pc.cast(text, type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(
            f"column {column!r} ({type}) holds a value a decimal cannot hold ({exc}): "
            f"NaN or infinity? cast it in the query (e.g. {column}::float8)"
        ) from None


class DriverError(Exception):
    """A statement the server refused, or a connection that failed, with the SQLSTATE that
    :func:`~modelyard.sql.engines.base.map_error` reads."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class Column:
    """A result column as the server describes it."""

    name: str
    type_name: str  # pg_type.typname: numeric, jsonb, _int4 (an array of int4)
    shown: str  # the type as SQL writes it: numeric(18,4), point, integer[]
    typmod: int
    enum: bool


class Describer:
    """The columns of a statement's result, from the server's description of it (Parse and
    Describe: the statement is planned, never run), on a psycopg connection of its own.

    ADBC's schema lacks what an import needs, depending on the driver's version: 1.8 marks
    neither a json column nor a numeric's precision and scale; later versions do, but their
    wheels decode with 2.3-2.9 times the CPU (see ``postgres_adbc``). The server's description
    is the same whatever the driver. Raises :class:`DriverError`."""

    def __init__(self, target: Target, timeout_seconds: float | None) -> None:
        self.target = target
        self.timeout_seconds = timeout_seconds
        self._conn: Any = None

    def columns(self, statement: str) -> list[Column]:
        import psycopg

        try:
            if self._conn is None:
                self._conn = psycopg.connect(
                    libpq_url(self.target, with_password=False),
                    password=self.target.password,
                    autocommit=True,
                    prepare_threshold=None,
                )
            conn = self._conn
            # One transaction: pgbouncer's transaction mode keeps Parse and Describe on one
            # server connection.
            with conn.transaction():
                if self.timeout_seconds:
                    conn.execute(timeout_statement(self.timeout_seconds))
                pg = conn.pgconn
                _check(psycopg, pg.prepare(b"", statement.encode()))
                result = pg.describe_prepared(b"")
                _check(psycopg, result)
                described = [
                    (result.fname(i).decode(), result.ftype(i), result.fmod(i))
                    for i in range(result.nfields)
                ]
                types = {
                    oid: (name, shown, enum)
                    for oid, name, shown, enum in conn.execute(
                        "SELECT oid::int8, typname::text, format_type(oid, NULL), typtype = 'e' "
                        "FROM pg_type WHERE oid = ANY(%s)",
                        [sorted({oid for _, oid, _ in described})],
                    )
                }
        except psycopg.Error as exc:
            raise DriverError(str(exc), exc.sqlstate) from None
        columns = []
        for name, oid, typmod in described:
            type_name, shown, enum = types.get(oid, (str(oid), str(oid), False))
            if type_name == "numeric" and typmod >= 4:
                shown = f"numeric({((typmod - 4) >> 16) & 0xFFFF},{(typmod - 4) & 0xFFFF})"
            columns.append(Column(name, type_name, shown, typmod, enum))
        return columns

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _check(psycopg: Any, result: Any) -> None:
    if result.status == psycopg.pq.ExecStatus.FATAL_ERROR:
        field = psycopg.pq.DiagnosticField
        state = result.error_field(field.SQLSTATE)
        message = result.error_field(field.MESSAGE_PRIMARY) or result.error_message
        raise DriverError(message.decode(errors="replace").strip(), state and state.decode())
