"""The engine contract: a read-only, repeatable-read session that streams a query as Arrow.

An engine turns a :class:`~modelyard.sql.connections.Target` into a :class:`Session`. Whatever
the driver, what comes out is the same: Arrow record batches of one schema, in the types a
Parquet file holds, with every driver error mapped onto modelyard's exception tree and stripped
of the connection's secret.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from modelyard.errors import (
    Forbidden,
    InvalidInput,
    ModelyardError,
    ServerUnreachable,
    TimedOut,
    Unauthenticated,
)
from modelyard.sql.connections import Target


@dataclass
class Batches:
    """A query's result as it streams: the schema first, then the batches."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]


class Session(ABC):
    """One transaction, begun read-only and repeatable-read by :meth:`Engine.open`: every
    statement run through it sees the same snapshot of the database. Nothing is ever committed;
    :meth:`close` rolls back and releases the connection."""

    server_version: str = ""

    @abstractmethod
    def first_row(self, query: str, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The first row of a small query (an aggregate), as Python values."""

    @abstractmethod
    def stream(
        self,
        query: str,
        params: Mapping[str, Any],
        batch_rows: int,
        types: Mapping[str, pa.DataType] | None = None,
    ) -> Batches:
        """The rows of ``query``, about ``batch_rows`` at a time, without holding the whole
        result in memory. ``types`` names the Arrow type of columns the engine cannot type
        itself (the importer casts every column it names afterwards). Raises InvalidInput
        naming the column whose type it cannot import."""

    @abstractmethod
    def close(self) -> None:
        """Roll back and disconnect; safe to call twice."""

    def export_snapshot(self) -> str:
        """The id of this transaction's snapshot, which sessions opened with it see too
        (engines whose ``splits`` is true)."""
        raise InvalidInput("a split read needs an engine that shares snapshots (PostgreSQL)")

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Engine(ABC):
    """How to read one kind of database. Subclasses import their driver inside ``open``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    splits: ClassVar[bool] = False
    """Whether sessions can share one snapshot (``open(..., snapshot=)``): a split import."""
    prefetch: ClassVar[bool] = False
    """Whether a thread of its own may read a result's batches ahead of the writer: the driver
    must allow its connection to be used from that thread and should decode without the GIL."""

    @abstractmethod
    def open(
        self, target: Target, timeout_seconds: float | None, snapshot: str | None = None
    ) -> Session:
        """Connect and begin the read-only, repeatable-read transaction. ``timeout_seconds``
        bounds every statement (the database cancels it) where the database can; ``snapshot``
        (from :meth:`Session.export_snapshot`, where ``splits``) makes it see that snapshot."""

    @classmethod
    def available(cls) -> bool:
        """Whether its driver is installed here."""
        return True


# errors -------------------------------------------------------------------------------------
_AUTH = re.compile(
    r"password authentication failed|authentication failed|no password supplied|"
    r"password is required|invalid password|access denied",
    re.I,
)


def map_error(
    exc: BaseException, target: Target, doing: str, sqlstate: str | None = None
) -> ModelyardError:
    """A driver's exception as the modelyard error that says what went wrong, with the
    database's own message (the secret removed)."""
    text = _clean(target.redact(" ".join(str(exc).split())))
    where = target.describe()
    state = (sqlstate or "").upper()
    if state.startswith("28") or _AUTH.search(text):
        return Unauthenticated(f"{where} refused the login: {text}")
    if state == "57014" or "statement timeout" in text or "interrupted" in text.lower():
        return TimedOut(f"the query on {where} was cancelled: it ran past its timeout ({text})")
    if state == "42501" or "permission denied" in text:
        return Forbidden(f"{where}: {text}")
    if state == "25006" or "read-only transaction" in text:
        return InvalidInput(f"{where}: imports run read-only, the query tried to write: {text}")
    if doing == "connecting" or state.startswith("08"):
        return ServerUnreachable(f"cannot connect to {where}: {text}")
    return InvalidInput(f"{where} refused the query: {text}")


def _clean(text: str) -> str:
    """The database's message without the driver's wrapping (ADBC's ``[libpq] ... ERROR:``
    prefix, its ``Query was: ...`` and ``SQLSTATE`` suffixes)."""
    text = re.sub(r"\s*SQLSTATE: \w+\s*$", "", text)
    text = re.sub(r"\s*Query was: .*$", "", text)
    match = re.search(r"\b(?:ERROR|FATAL):\s+(.*)$", text)
    return match[1] if match else text


# types --------------------------------------------------------------------------------------
_UNSTORABLE = (
    pa.types.is_interval,
    pa.types.is_union,
)


def check_storable(schema: pa.Schema, describe: Mapping[str, str] | None = None) -> None:
    """Refuse a column a Parquet part cannot hold, naming it and its database type."""
    for field in schema:
        kind = field.type
        while pa.types.is_list(kind) or pa.types.is_large_list(kind):
            kind = kind.value_type
        opaque = isinstance(kind, pa.BaseExtensionType) and kind.extension_name == "arrow.opaque"
        if opaque or any(test(kind) for test in _UNSTORABLE):
            native = (describe or {}).get(field.name) or str(field.type)
            raise InvalidInput(
                f"column {field.name!r} has type {native}, which an import cannot store: cast "
                f"it in the query (e.g. {field.name}::text) or leave it out"
            )


_SIMPLE_TYPES = re.compile(r"^(timestamp)\[(s|ms|us|ns)(?:,\s*tz=([^\]]+))?\]$")
_DECIMAL = re.compile(r"^decimal(128|256)?\((\d+),\s*(-?\d+)\)$")


def parse_type(text: str) -> pa.DataType:
    """An Arrow type from the way it prints: ``int64``, ``string``, ``timestamp[us, tz=UTC]``,
    ``decimal128(18, 4)``, ``json``, ``uuid``, ``list<int64>``."""
    spec = text.strip()
    if spec == "json":
        return pa.json_()
    if spec == "uuid":
        return pa.uuid()
    if spec.startswith("list<") and spec.endswith(">"):
        return pa.list_(parse_type(spec[5:-1].split(":", 1)[-1]))
    if match := _SIMPLE_TYPES.match(spec):
        return pa.timestamp(match[2], match[3])
    if match := _DECIMAL.match(spec):
        precision, scale = int(match[2]), int(match[3])
        wide = match[1] == "256" or precision > 38
        return (pa.decimal256 if wide else pa.decimal128)(precision, scale)
    try:
        return pa.type_for_alias(spec)
    except (ValueError, KeyError):
        raise InvalidInput(
            f"unknown Arrow type {text!r}: write e.g. int64, float64, string, bool, date32, "
            "timestamp[us, tz=UTC], decimal128(18, 4), json, uuid or list<int64>"
        ) from None


def plain(schema: pa.Schema) -> pa.Schema:
    """The schema without driver metadata: what a part and a version record."""
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])
