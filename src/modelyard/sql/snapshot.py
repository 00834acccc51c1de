"""An import: a query's result, read in one snapshot, committed as a dataset version.

1. The connection is resolved (its password read now) and the engine opens one read-only,
   repeatable-read transaction: every statement of the import sees the same data, whatever is
   written meanwhile.
2. The result streams into Parquet parts in a temporary folder, digested on the way (see
   :mod:`modelyard.sql.digest`); an incremental import reads only its new windows, and checks
   first that no rows arrived late in the windows already imported
   (:mod:`modelyard.sql.incremental`).
3. Nothing is committed when the content equals the latest version's (unless ``force``), when a
   snapshot returns no rows (unless ``allow_empty``), or when no new rows are due.
4. Otherwise the parts go through the registry's one commit protocol (draft, upload of what the
   blob store lacks, commit): an incremental version lists the previous version's parts by their
   digests, which the store holds already, so they are neither uploaded nor copied again.

Anything that fails before the commit leaves nothing behind: no version, no event, no run.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import Conflict, InvalidInput, NotFound, TimedOut
from modelyard.registry.records import VersionInfo, VersionSpec
from modelyard.sql import incremental, split
from modelyard.sql import windows as w
from modelyard.sql.connections import Connection, Target, resolve
from modelyard.sql.engines import Engine, Session, choose_engine
from modelyard.sql.engines.base import parse_type, plain
from modelyard.sql.params import check_params
from modelyard.sql.params import recorded as recorded_params
from modelyard.sql.parts import PartWriter, prefetched
from modelyard.sql.source import (
    TAG_CONNECTION,
    TAG_CONTENT,
    TAG_ENGINE,
    TAG_QUERY,
    TAG_QUERY_SHA256,
    TAG_ROWS,
    TAG_SERVER,
    TAG_SPLIT,
    TAG_WATERMARK,
    TAG_WATERMARK_KIND,
    TAG_WINDOWS,
    ImportResult,
    SqlSource,
)
from modelyard.types import FileEntry, ModelRef

if TYPE_CHECKING:
    from modelyard.client import Client

Clock = Callable[[], dt.datetime]
Progress = Callable[[int], None]


class Registry(Protocol):
    """The registry as an import sees it (:class:`ClientRegistry` is the SDK's)."""

    def latest(self, ref: ModelRef) -> VersionInfo | None:
        """The newest committed version of the dataset, None when it has none."""

    def folder(self, version: VersionInfo) -> Path:
        """The version's files, verified, in a local folder."""

    def commit(
        self, ref: ModelRef, spec: VersionSpec, files: list[tuple[Path | None, FileEntry]]
    ) -> VersionInfo:
        """Commit through the registry's protocol; a file without a local path is content the
        blob store holds already (a part of an earlier version)."""


class ClientRegistry:
    """The registry through the SDK: the same draft, upload plan and commit as ``push``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def latest(self, ref: ModelRef) -> VersionInfo | None:
        try:
            return self.client.get_version(ModelRef(ref.namespace, ref.name), kind="dataset")
        except NotFound:
            # No version yet: the import makes the first. A namespace that does not exist is
            # said now, before the query runs, not after it has read every row.
            self.client.request("GET", f"/namespaces/{ref.namespace}")
            return None

    def folder(self, version: VersionInfo) -> Path:
        return self.client.pull(ModelRef.parse(version.ref), kind="dataset")

    def commit(
        self, ref: ModelRef, spec: VersionSpec, files: list[tuple[Path | None, FileEntry]]
    ) -> VersionInfo:
        return self.client.push(ref, ".", spec, kind="dataset", files=files)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def import_sql(
    registry: Registry,
    connections: Mapping[str, Connection],
    ref: ModelRef,
    source: SqlSource,
    *,
    force: bool = False,
    allow_empty: bool = False,
    backfill: tuple[Any, Any] | None = None,
    clock: Clock = utcnow,
    progress: Progress | None = None,
    environ: Mapping[str, str] | None = None,
) -> ImportResult:
    """Run ``source`` and commit its result as the next version of the dataset ``ref``."""
    began = time.monotonic()
    check_params(source.query, source.params)
    if backfill is not None and source.incremental is None:
        raise InvalidInput("a backfill needs an incremental source (a watermark column)")
    target = resolve(source.connection, connections, environ)
    engine = choose_engine(target, source.engine)
    types = {name: parse_type(text) for name, text in source.types.items()}
    if source.split_by is not None and not engine.splits:
        raise InvalidInput(
            f"the {engine.name} engine reads on one connection: a split read (--split-by, "
            "--parallel) needs PostgreSQL"
        )
    latest = registry.latest(ref)
    deadline = began + source.timeout_seconds if source.timeout_seconds else None
    with tempfile.TemporaryDirectory(prefix="modelyard-sql-") as temp:
        run = Run(target, engine, source, types, Path(temp), deadline, progress)
        with engine.open(target, source.timeout_seconds) as session:
            planned: Planned | str
            if source.incremental is not None:
                planned = incremental.plan(run, session, registry, latest, clock, backfill)
            elif source.split_by is not None:
                planned = split.plan(run, session, allow_empty)
            else:
                planned = run.snapshot(session, allow_empty)
        if isinstance(planned, str):
            return _nothing(planned, latest, None, engine, began)
        if source.incremental is not None and not (planned.read or planned.replaced or allow_empty):
            windows = ", ".join(str(r.window) for r in planned.new)
            reason = f"no new rows in {windows}: nothing committed"
            return _nothing(reason, latest, planned, engine, began)
        if latest is not None and latest.tags.get(TAG_CONTENT) == planned.content and not force:
            reason = (
                f"identical to {latest.ref} (content sha256 {planned.content[:16]}): nothing "
                "committed (--force, or force=True, commits a new version anyway)"
            )
            return _nothing(reason, latest, planned, engine, began)
        spec = _spec(target, engine, session.server_version, source, planned)
        version = registry.commit(ref, spec, planned.files(latest))
    reason = f"{_count(planned.rows, 'row')} in {_count(len(version.files), 'file')}"
    return ImportResult(
        committed=True,
        version=version,
        reason=reason,
        rows=planned.read,
        content_sha256=planned.content,
        windows=[str(r.window) for r in planned.new],
        engine=engine.name,
        seconds=time.monotonic() - began,
    )


def _nothing(
    reason: str,
    latest: VersionInfo | None,
    planned: Planned | None,
    engine: Engine,
    began: float,
) -> ImportResult:
    return ImportResult(
        committed=False,
        version=latest,
        reason=reason,
        rows=planned.read if planned else 0,
        content_sha256=planned.content if planned else None,
        windows=[str(r.window) for r in planned.new] if planned else [],
        engine=engine.name,
        seconds=time.monotonic() - began,
    )


class Planned:
    """What an import read and will commit: the schema, new part files, the content digest."""

    def __init__(self, schema: pa.Schema, folder: Path) -> None:
        self.schema = schema
        self.folder = folder
        self.parts: list[Path] = []
        self.read = 0
        self.content = ""
        self.rows = 0
        self.new: list[w.Recorded] = []
        self.kept: list[w.Recorded] = []
        self.kind: w.Kind | None = None
        self.column: str | None = None
        self.windows: list[w.Recorded] = []
        self.split: list[w.Recorded] = []  # a split read's ranges
        self.replaced = 0

    def files(self, latest: VersionInfo | None) -> list[tuple[Path | None, FileEntry]]:
        from modelyard.client import hash_file

        files: list[tuple[Path | None, FileEntry]] = []
        for part in self.parts:
            files.append(
                (part, FileEntry(part.relative_to(self.folder).as_posix(), *hash_file(part)))
            )
        stored = {f.path: f for f in latest.files} if latest is not None else {}
        for recorded in self.kept:
            for path in recorded.files:
                if path not in stored:
                    raise Conflict(f"{latest.ref if latest else 'the dataset'} lacks part {path}")
                files.append((None, stored[path]))
        return files


class Run:
    """One import's reads: query results written as parts under ``folder``, counted for
    ``progress`` and held to the deadline. :func:`incremental.plan` reads its windows through
    :meth:`write` too."""

    def __init__(
        self,
        target: Target,
        engine: Engine,
        source: SqlSource,
        types: Mapping[str, pa.DataType],
        folder: Path,
        deadline: float | None,
        progress: Progress | None,
    ) -> None:
        self.target, self.engine, self.source = target, engine, source
        self.types, self.folder = types, folder
        self.deadline, self.progress = deadline, progress
        self.read = 0
        self._lock = threading.Lock()
        self.stop = threading.Event()
        """Set when a split read's range failed: the others stop at their next batch."""

    def planned(self, schema: pa.Schema) -> Planned:
        """An empty plan for parts written under this run's folder."""
        return Planned(schema, self.folder)

    # snapshots ----------------------------------------------------------------------------------
    def snapshot(self, session: Session, allow_empty: bool) -> Planned:
        (writer,), schema = self.write(session, self.source.query, self.source.params, self.folder)
        parts = writer.close(keep_empty=allow_empty)
        if writer.rows == 0 and not allow_empty:
            raise InvalidInput(
                "the query returned no rows: nothing committed (allow_empty, or --allow-empty, "
                "commits an empty version)"
            )
        planned = self.planned(schema)
        planned.parts, planned.read, planned.rows = parts, writer.rows, writer.rows
        planned.content = writer.digest.hexdigest()
        return planned

    def write(
        self,
        session: Session,
        query: str,
        params: Mapping[str, Any],
        folder: Path,
        tail: tuple[str, w.Value, Path] | None = None,
    ) -> tuple[list[PartWriter], pa.Schema]:
        """The query's result written as parts into ``folder``. With ``tail`` (a column, a
        cut, a second folder), rows whose column is at or past the cut go to a second writer in
        that folder instead, from the same stream: a first import's bulk and tail windows
        (:func:`windows.tail_cut`) in one read. One writer comes back when the result lacks
        the column (then nothing was split)."""
        result = session.stream(query, params, self.source.batch_rows, self.types)
        schema = _cast_schema(plain(result.schema), self.types)
        writers = [PartWriter(folder, schema)]
        index = schema.get_field_index(tail[0]) if tail is not None else -1
        cut: pa.Scalar | None = None
        if tail is not None and index >= 0:
            cut = _scalar(tail[1], schema.field(index).type)
            writers.append(PartWriter(tail[2], schema))
        batches = _cast(result.batches, schema)
        if self.engine.prefetch:
            batches = prefetched(batches)
        try:
            for batch in batches:
                if cut is None:
                    writers[0].write(batch)
                else:
                    _route(batch, index, cut, writers[0], writers[1])
                with self._lock:  # a split read's threads count together
                    self.read += batch.num_rows
                    if self.progress is not None:
                        self.progress(self.read)
                if self.stop.is_set():
                    raise split.Stopped()
                if self.deadline is not None and time.monotonic() > self.deadline:
                    raise TimedOut(
                        f"the import from {self.target.describe()} ran past its timeout of "
                        f"{self.source.timeout_seconds:g} s: nothing committed"
                    )
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        finally:
            batches.close()  # a reader thread stops before the session is used or closed
        return writers, schema


def _scalar(value: w.Value, kind: pa.DataType) -> pa.Scalar:
    """A watermark as an Arrow scalar to compare ``kind`` values with: an int64, a timestamp in
    microseconds in the column's time zone, or a date32 (compute casts the column to it). Made
    from its bytes: ``pa.scalar`` imports pandas, 0.3-0.4 s of an import's time."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            epoch = dt.datetime(1970, 1, 1)
        else:
            epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        tz = kind.tz if pa.types.is_timestamp(kind) else None
        micros = (value - epoch) // dt.timedelta(microseconds=1)
        return _one(pa.timestamp("us", tz), struct.pack("<q", micros))
    if isinstance(value, dt.date):
        return _one(pa.date32(), struct.pack("<i", (value - dt.date(1970, 1, 1)).days))
    return _one(pa.int64(), struct.pack("<q", value))


def _one(kind: pa.DataType, data: bytes) -> pa.Scalar:
    return pa.Array.from_buffers(kind, 1, [None, pa.py_buffer(data)])[0]


def _route(
    batch: pa.RecordBatch, index: int, cut: pa.Scalar, below: PartWriter, above: PartWriter
) -> None:
    """The batch's rows under ``cut`` to ``below``, the others to ``above`` (no NULLs: a first
    import refuses them). A batch wholly on one side, as most are, is written as it is."""
    under = pc.less(batch.column(index), cut)
    count = pc.sum(under).as_py() or 0
    if count == batch.num_rows:
        below.write(batch)
    elif count == 0:
        above.write(batch)
    else:
        below.write(batch.filter(under))
        above.write(batch.filter(pc.invert(under)))


def _cast_schema(schema: pa.Schema, types: Mapping[str, pa.DataType]) -> pa.Schema:
    unknown = sorted(set(types) - set(schema.names))
    if unknown:
        raise InvalidInput(
            f"types names column {unknown[0]!r}, which the query does not return "
            f"(it returns {', '.join(schema.names)})"
        )
    return pa.schema([pa.field(f.name, types.get(f.name, f.type), True) for f in schema])


def _cast(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Generator[pa.RecordBatch]:
    for batch in batches:
        if batch.schema.equals(schema):
            yield batch
            continue
        columns = []
        for field, column in zip(schema, batch.columns, strict=True):
            if column.type == field.type:
                columns.append(column)
                continue
            try:
                columns.append(pc.cast(column, field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInput(
                    f"column {field.name!r} ({column.type}) cannot be read as {field.type}: {exc}"
                ) from None
        yield pa.RecordBatch.from_arrays(columns, schema=schema)


def _spec(
    target: Target, engine: Engine, server: str, source: SqlSource, planned: Planned
) -> VersionSpec:
    tags = {
        TAG_CONNECTION: target.name,
        TAG_ENGINE: engine.name,
        TAG_SERVER: server,
        TAG_QUERY: source.query,
        TAG_QUERY_SHA256: source.query_sha256,
        TAG_ROWS: str(planned.rows),
        TAG_CONTENT: planned.content,
    }
    if planned.column is not None and planned.kind is not None:
        tags[TAG_WATERMARK] = planned.column
        tags[TAG_WATERMARK_KIND] = planned.kind
        tags[TAG_WINDOWS] = json.dumps(
            [r.to_json() for r in planned.windows],
            separators=(",", ":"),
        )
    if planned.split:
        tags[TAG_SPLIT] = json.dumps(
            {"column": source.split_by, "ranges": [r.to_json() for r in planned.split]},
            separators=(",", ":"),
        )
    signature = {
        "format": "parquet",
        "schema": [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in planned.schema
        ],
        "rows": planned.rows,
    }
    description = source.description or (
        f"{planned.rows} rows imported from connection {target.name!r}"
    )
    return VersionSpec(
        description=description,
        params=recorded_params(source.params),
        signature=signature,
        tags=tags,
    )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")
