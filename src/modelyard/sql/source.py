"""What an import reads (``SqlSource``), how it goes on from the last one (``Incremental``),
and what it did (``ImportResult``).

A version made by an import records, in its tags, everything needed to know what it holds and
to run it again: the connection's name (never its secrets), the engine, the server's version, the
query and its sha256, the row count, the content digest and, for an incremental dataset, its
watermark and windows. The parameters are the version's ``params``; the Arrow schema is its
``signature``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelyard.errors import InvalidInput
from modelyard.registry.records import VersionInfo
from modelyard.types import Record, check_name, check_text

# Tags of a version an import committed.
TAG_CONNECTION = "sql.connection"
TAG_ENGINE = "sql.engine"
TAG_SERVER = "sql.server_version"
TAG_QUERY = "sql.query"
TAG_QUERY_SHA256 = "sql.query_sha256"
TAG_ROWS = "sql.rows"
TAG_CONTENT = "sql.content_sha256"
TAG_WATERMARK = "sql.watermark"
TAG_WATERMARK_KIND = "sql.watermark_kind"
TAG_WINDOWS = "sql.windows"
TAG_SPLIT = "sql.split"
RESERVED_PARAMS = ("modelyard_start", "modelyard_end")

Param = str | int | float | bool | decimal.Decimal | dt.datetime | dt.date
Amount = int | float | dt.timedelta


class Incremental(BaseModel):
    """Import only what is new since the previous version, by a watermark column."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str = Field(description="A column that grows: an id, a timestamp or a date")
    start: int | dt.datetime | dt.date | None = Field(
        default=None, description="Where the first import starts (default: the first row)"
    )
    lag: Amount = Field(
        default=0,
        description="Rows younger than this wait for the next import (seconds or a duration "
        "for times, a count for numbers)",
    )
    window: Amount | None = Field(
        default=None, description="Split the range into windows of this size, one part each"
    )
    verify: Literal["last", "all"] = Field(
        default="last",
        description="Which imported windows are counted again for rows that arrived late: "
        "the last one (cheap; after a first import without a start or window, its tail: the "
        "last 1 % of the range or the lag) or all",
    )

    @field_validator("column")
    @classmethod
    def _column(cls, value: str) -> str:
        if not value or "\x00" in value:
            raise InvalidInput("the watermark column needs a name")
        return value


class SqlSource(BaseModel):
    """A query on a named connection, with its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    connection: str = Field(description="Name of a connection in the settings")
    query: str = Field(min_length=1, max_length=1_000_000)
    params: dict[str, Param] = Field(
        default_factory=dict, description="Values of the query's :name parameters"
    )
    engine: str | None = Field(default=None, description="Engine instead of the automatic one")
    incremental: Incremental | None = None
    types: dict[str, str] = Field(
        default_factory=dict,
        description="Arrow types of columns the driver cannot type (SQLite expressions, "
        "generic SQLAlchemy), e.g. {'day': 'date32'}",
    )
    timeout_seconds: float | None = Field(default=None, gt=0)
    split_by: str | None = Field(
        default=None,
        description="Read the result as `parallel` ranges of this integer, date or timestamp "
        "column (an indexed one: each range is a query of its own), over as many connections "
        "sharing one snapshot (PostgreSQL)",
    )
    parallel: int = Field(default=1, ge=1, le=16, description="Connections of a split read")
    batch_rows: int = Field(default=65_536, ge=1, le=10_000_000)
    description: str = Field(default="", max_length=10_000)

    @field_validator("connection")
    @classmethod
    def _connection(cls, value: str) -> str:
        return check_name(value, "connection name")

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return check_text(value, "the query")

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Param]) -> dict[str, Param]:
        for name in value:
            if name in RESERVED_PARAMS:
                raise InvalidInput(f"parameter name {name!r} is reserved for incremental windows")
        return value

    @model_validator(mode="after")
    def _split(self) -> SqlSource:
        if (self.split_by is not None) != (self.parallel > 1):
            raise InvalidInput(
                "a split read needs both a column and a count: split_by (--split-by COLUMN) "
                "and parallel above 1 (--parallel N)"
            )
        if self.parallel > 1 and self.incremental is not None:
            raise InvalidInput(
                "an incremental import reads its windows on one connection: leave out "
                "parallel (--parallel) or the watermark"
            )
        if self.split_by is not None and (not self.split_by or "\x00" in self.split_by):
            raise InvalidInput("the split column needs a name")
        return self

    @property
    def query_sha256(self) -> str:
        return hashlib.sha256(self.query.encode()).hexdigest()


class ImportResult(Record):
    """What one import did: the version it committed, or why it committed none."""

    committed: bool
    version: VersionInfo | None = Field(
        description="The new version; when nothing was committed, the latest one (if any)"
    )
    reason: str
    rows: int = Field(description="Rows this import read")
    content_sha256: str | None = None
    windows: list[str] = []
    engine: str
    seconds: float

    def summary(self) -> str:
        if not self.committed:
            return self.reason
        assert self.version is not None
        read = f"{self.rows:,} row" + ("" if self.rows == 1 else "s")
        return f"committed {self.version.ref}: {read} read, {self.reason}"


def recorded_source(version: VersionInfo) -> dict[str, Any]:
    """The SQL tags of a version an import made (empty for any other version)."""
    return {k: v for k, v in version.tags.items() if k.startswith("sql.")}
