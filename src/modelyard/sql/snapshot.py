"""An import: a query's result, read in one snapshot, committed as a dataset version.

1. The connection is resolved (its password read now) and the engine opens one read-only,
   repeatable-read transaction: every statement of the import sees the same data, whatever is
   written meanwhile.
2. The result streams into Parquet parts in a temporary folder, digested on the way (see
   :mod:`modelyard.sql.digest`); an incremental import reads only its new windows.
3. Nothing is committed when the content equals the latest version's (unless ``force``), when a
   snapshot returns no rows (unless ``allow_empty``), or when no new rows are due.
4. Otherwise the parts go through the registry's one commit protocol (draft, upload of what the
   blob store lacks, commit): an incremental version lists the previous version's parts by their
   digests, which the store holds already, so they are neither uploaded nor copied again.

Anything that fails before the commit leaves nothing behind: no version, no event, no run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import Conflict, InvalidInput, NotFound, TimedOut
from modelyard.registry.records import VersionInfo, VersionSpec
from modelyard.sql import windows as w
from modelyard.sql.connections import Connection, Target, resolve
from modelyard.sql.digest import schema_text
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
ALIAS = "modelyard_q"


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
    latest = registry.latest(ref)
    deadline = began + source.timeout_seconds if source.timeout_seconds else None
    with tempfile.TemporaryDirectory(prefix="modelyard-sql-") as temp:
        run = _Run(target, engine, source, types, Path(temp), deadline, progress)
        with engine.open(target, source.timeout_seconds) as session:
            planned: _Planned | str = (
                run.snapshot(session, allow_empty)
                if source.incremental is None
                else run.incremental(session, registry, latest, clock, backfill)
            )
        if isinstance(planned, str):
            return _nothing(planned, latest, None, engine, began)
        if source.incremental is not None and not (planned.read or planned.replaced or allow_empty):
            windows = ", ".join(str(r.window) for r in planned.new)
            reason = f"no new rows in {windows}: nothing committed"
            return _nothing(reason, latest, planned, engine, began)
        if latest is not None and latest.tags.get(TAG_CONTENT) == planned.content and not force:
            reason = (
                f"identical to {latest.ref} (content sha256 {planned.content[:16]}): nothing "
                "committed (force commits a new version anyway)"
            )
            return _nothing(reason, latest, planned, engine, began)
        spec = _spec(target, engine, session.server_version, source, planned)
        version = registry.commit(ref, spec, planned.files(latest))
    reason = f"{planned.rows} rows in {len(version.files)} files"
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
    planned: _Planned | None,
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


class _Planned:
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


class _Run:
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

    # snapshots ----------------------------------------------------------------------------------
    def snapshot(self, session: Session, allow_empty: bool) -> _Planned:
        (writer,), schema = self._write(session, self.source.query, self.source.params, self.folder)
        parts = writer.close(keep_empty=allow_empty)
        if writer.rows == 0 and not allow_empty:
            raise InvalidInput(
                "the query returned no rows: nothing committed (allow_empty, or --allow-empty, "
                "commits an empty version)"
            )
        planned = _Planned(schema, self.folder)
        planned.parts, planned.read, planned.rows = parts, writer.rows, writer.rows
        planned.content = writer.digest.hexdigest()
        return planned

    def _write(
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
                self.read += batch.num_rows
                if self.progress is not None:
                    self.progress(self.read)
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

    # incremental imports ------------------------------------------------------------------------
    def over(self, what: str) -> str:
        """``SELECT what`` over the source's query."""
        return f"SELECT {what} FROM ({self.source.query}) AS {ALIAS}"

    def incremental(
        self,
        session: Session,
        registry: Registry,
        latest: VersionInfo | None,
        clock: Clock,
        backfill: tuple[Any, Any] | None,
    ) -> _Planned | str:
        spec = self.source.incremental
        assert spec is not None
        column = f"{ALIAS}.{session.quote(spec.column)}"
        params = dict(self.source.params)
        history = _history(latest, spec.column)
        below: int | None = None  # rows under the history's end, when counted with the largest
        smallest: Any = None  # a first import's smallest watermark: where its range starts
        if history is None:
            # Two statements, not one pass with count(*): with an index on the column, min and
            # max are two probes and the NULLs a range of it (3 ms, not 460, at 10M rows).
            # Without one, they are two scans where one would do: such a column costs a scan at
            # every later import anyway.
            smallest, largest = session.first_row(
                self.over(f"min({column}), max({column})"), params
            )
            (nulls,) = session.first_row(f"{self.over('count(*)')} WHERE {column} IS NULL", params)
            if nulls:
                raise Conflict(
                    f"the watermark column {spec.column!r} is NULL in {nulls} rows: they would "
                    "never fall into a window; filter them out or pick another column"
                )
            if largest is None and spec.start is None:
                return "the query returned no rows: nothing committed"
            kind = self._kind(session, column, params)
        else:
            kind = history.kind
            largest = None
            if kind == "int" and backfill is None:  # a backfill's windows end where it says
                largest, below = self._largest(session, history, column, params)
        if largest is not None:
            largest = w.coerce(largest, kind, "the largest watermark")
        lag = w.step_of(spec.lag, kind, "lag")
        size = w.step_of(spec.window, kind, "window") if spec.window is not None else None
        replaced: list[w.Recorded] = []
        if backfill is not None:
            start = None if backfill[0] is None else w.coerce(backfill[0], kind, "backfill start")
            end = w.coerce(backfill[1], kind, "backfill end")
            if start is None and size is not None:
                query, bound = _windowed(
                    self.over(f"min({column})"), column, w.Window(None, end), params
                )
                (first,) = session.first_row(query, bound)
                windows, replaced = w.backfill_windows(history, first, end, size)
                if windows:
                    windows[0] = w.Window(None, windows[0].end)
            else:
                windows, replaced = w.backfill_windows(history, start, end, size)
        else:
            if history is not None:
                self._verify(session, registry, latest, history, column, params, below)
            start = w.coerce(spec.start, kind, "start") if spec.start is not None else None
            upper = w.upper_bound(kind, clock(), largest)
            windows = w.next_windows(history, kind, start=start, upper=upper, lag=lag, size=size)
        if not windows:
            since = f" since {w.to_text(history.end)}" if history is not None else ""
            held = f" (rows in the last {spec.lag} wait for the lag)" if spec.lag else ""
            return f"no new rows{since}{held}: nothing committed"
        # A first import of [-inf, end) records its tail window apart, from the same read, so
        # that the next import's check for late rows recounts the tail, not the whole table.
        cut: w.Value | None = None
        first = history is None and backfill is None and size is None and len(windows) == 1
        if first and windows[0].start is None and smallest is not None:
            smallest = w.coerce(smallest, kind, "the smallest watermark")
            cut = w.tail_cut(smallest, windows[0].end, lag)
        seq = history.next_seq if history is not None else 1
        planned: _Planned | None = None
        new: list[w.Recorded] = []
        for window in windows:
            folder = self.folder / f"window-{seq:06d}"
            query, bound = _windowed(self.over("*"), column, window, params)
            whole = history is None and window.start is None and largest is not None
            if whole and window.end > largest:
                # Every row of the snapshot (NULLs were refused above): a bound the planner
                # cannot see would have it guess an index scan of the whole table.
                query, bound = self.over("*"), dict(params)
            tail = (
                None if cut is None else (spec.column, cut, self.folder / f"window-{seq + 1:06d}")
            )
            writers, schema = self._write(session, query, bound, folder, tail)
            if planned is None:
                planned = _Planned(schema, self.folder)
                _check_schema(latest, schema, history)
            elif schema_text(schema) != schema_text(planned.schema):
                raise InvalidInput("the query's columns changed between two windows")
            bounds = [window]
            if len(writers) == 2 and cut is not None:
                bounds = [w.Window(window.start, cut), w.Window(cut, window.end)]
            for part_window, writer in zip(bounds, writers, strict=True):
                parts = writer.close()
                planned.parts.extend(parts)
                new.append(
                    w.Recorded(
                        part_window,
                        writer.rows,
                        writer.digest.hexdigest(),
                        tuple(p.relative_to(self.folder).as_posix() for p in parts),
                        seq,
                    )
                )
                seq += 1
        assert planned is not None
        kept = [r for r in (history.windows if history else []) if r not in replaced]
        everything = w.ordered(kept + new)
        planned.new, planned.kept, planned.kind, planned.column = new, kept, kind, spec.column
        planned.replaced = len(replaced)
        planned.read = sum(r.rows for r in new)
        planned.rows = sum(r.rows for r in everything)
        planned.content = _windows_digest(planned.schema, everything)
        planned.windows = everything
        return planned

    def _kind(self, session: Session, column: str, params: Mapping[str, Any]) -> w.Kind:
        """The watermark's kind, from its type in the result (SQLite, say, hands dates over as
        text)."""
        spec = self.source.incremental
        assert spec is not None
        probe = session.stream(self.over(column) + " WHERE 1 = 0", params, 1, self.types)
        for _ in probe.batches:  # none; reading to the end closes the cursor
            pass
        kind = _cast_schema(plain(probe.schema), {}).field(0).type
        name = spec.column
        if spec.column in self.types:
            kind = self.types[spec.column]
        if pa.types.is_integer(kind):
            return "int"
        if pa.types.is_timestamp(kind):
            return "timestamptz" if kind.tz is not None else "timestamp"
        if pa.types.is_date(kind):
            return "date"
        raise InvalidInput(
            f"the watermark column {name!r} is {kind}: a watermark is an integer, a timestamp "
            "or a date column"
        )

    def _largest(
        self, session: Session, history: w.History, column: str, params: Mapping[str, Any]
    ) -> tuple[Any, int | None]:
        """The largest watermark; and, when the check for late rows counts every row under the
        history's end (``verify="all"``, or a last window open below: after a first import
        without a start that recorded no tail: one with a window size, or over too small a
        range), that count too, in the same pass. Without an index on the column
        (a view, a join) the largest value costs a pass of its own otherwise."""
        spec = self.source.incremental
        last = history.last
        assert spec is not None and last is not None
        if spec.verify != "all" and last.window.start is not None:
            (largest,) = session.first_row(self.over(f"max({column})"), params)
            return largest, None
        bound = dict(params)
        under = _condition(column, w.Window(None, last.window.end), bound)
        largest, below = session.first_row(
            self.over(f"max({column}), count(CASE WHEN {under} THEN 1 END)"), bound
        )
        return largest, int(below)

    def _verify(
        self,
        session: Session,
        registry: Registry,
        latest: VersionInfo | None,
        history: w.History,
        column: str,
        params: Mapping[str, Any],
        below: int | None = None,
    ) -> None:
        """Refuse when rows arrived in windows already imported: the watermark is not
        monotonic (or the lag too short), and an import would miss them for good. ``below``:
        the rows under the history's end, when :meth:`_largest` counted them already.

        The recount reads every row of the last window (every row imported, with
        ``verify="all"``). After a first import without a start, the last window is its tail
        (:func:`windows.tail_cut`: the last 1 % of the range, or the lag), not the whole table:
        late rows older than the tail are found by ``verify="all"`` only."""
        spec = self.source.incremental
        assert spec is not None and latest is not None
        last = history.last
        assert last is not None
        if spec.verify == "all":
            if below is None:
                query, bound = _windowed(
                    self.over("count(*)"), column, w.Window(None, last.window.end), params
                )
                (below,) = session.first_row(query, bound)
            if int(below) == sum(r.rows for r in history.windows):
                return
            suspects = history.windows
        else:
            suspects = [last]
        found: list[str] = []
        values: list[str] = []
        for recorded in suspects:
            if below is not None and recorded.window.start is None and recorded is last:
                count = below  # the only window: it holds every row under the end
            else:
                query, bound = _windowed(self.over("count(*)"), column, recorded.window, params)
                (count,) = session.first_row(query, bound)
            if int(count) > recorded.rows:
                late = self._late_values(session, registry, latest, recorded, column, params)
                found.append(
                    f"window {recorded.window} held {recorded.rows} rows when {latest.ref} "
                    f"imported it and holds {count} now ({spec.column} = "
                    f"{', '.join(late) or '?'})"
                )
                values.extend(late)
        if found:
            raise Conflict(
                f"the watermark column {spec.column!r} is not monotonic: rows arrived in "
                f"windows already imported: {'; '.join(found)}. Nothing committed: raise the "
                "lag, or backfill those windows",
                values=values,
            )

    def _late_values(
        self,
        session: Session,
        registry: Registry,
        latest: VersionInfo,
        recorded: w.Recorded,
        column: str,
        params: Mapping[str, Any],
    ) -> list[str]:
        """Watermark values that have more rows now than the imported parts of the window."""
        spec = self.source.incremental
        assert spec is not None
        before: dict[Any, int] = {}
        if recorded.files:
            import pyarrow.parquet as pq

            folder = registry.folder(latest)
            for path in recorded.files:
                values = pq.read_table(folder / path, columns=[spec.column]).column(0)
                for item in pc.value_counts(values).to_pylist():
                    before[item["values"]] = before.get(item["values"], 0) + item["counts"]
        query, bound = _windowed(self.over(column), column, recorded.window, params)
        result = session.stream(query, bound, self.source.batch_rows, self.types)
        now: dict[Any, int] = {}
        for batch in result.batches:
            for item in pc.value_counts(batch.column(0)).to_pylist():
                now[item["values"]] = now.get(item["values"], 0) + item["counts"]
        late = [v for v, n in now.items() if n > before.get(v, 0)]
        return [str(w.to_text(v) if isinstance(v, int | dt.date) else v) for v in late[:5]]


def _windowed(
    inner: str, column: str, window: w.Window, params: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """``inner`` over the window's rows, and the values to bind."""
    bound = dict(params)
    return f"{inner} WHERE {_condition(column, window, bound)}", bound


def _condition(column: str, window: w.Window, bound: dict[str, Any]) -> str:
    """The window as a condition on ``column``; its bounds added to ``bound``, or written as
    literals when they are integers (exact digits: nothing to quote, every dialect reads them).
    A literal is what the planner sees on every engine, where a bound value may reach it as an
    unknown (ADBC's streamed reads take theirs from settings): ``id >= 1 AND id < 10000001``
    over ten million rows is a sequential scan, not an index scan planned for 0.5 % of them."""
    clauses = []
    for name, op, value in (
        ("modelyard_start", ">=", window.start),
        ("modelyard_end", "<", window.end),
    ):
        if value is None:
            continue
        if isinstance(value, int):
            clauses.append(f"{column} {op} {value}")
        else:
            clauses.append(f"{column} {op} :{name}")
            bound[name] = value
    return " AND ".join(clauses)


def _history(latest: VersionInfo | None, column: str) -> w.History | None:
    if latest is None:
        return None
    recorded_column = latest.tags.get(TAG_WATERMARK)
    if recorded_column is None:
        raise Conflict(
            f"{latest.ref} was not made by an incremental import: an incremental import goes "
            "on from one; import into a new dataset"
        )
    if recorded_column != column:
        raise Conflict(
            f"{latest.ref} was imported by watermark column {recorded_column!r}, not "
            f"{column!r}: keep the column, or import into a new dataset"
        )
    kind = latest.tags.get(TAG_WATERMARK_KIND)
    if kind not in ("int", "timestamp", "timestamptz", "date"):
        raise Conflict(f"{latest.ref} records no watermark kind")
    windows = [w.Recorded.from_json(item, kind) for item in json.loads(latest.tags[TAG_WINDOWS])]
    return w.History(column, kind, windows)


def _check_schema(latest: VersionInfo | None, schema: pa.Schema, history: w.History | None) -> None:
    if latest is None or history is None:
        return
    before = [(c.get("name"), c.get("type")) for c in latest.signature.get("schema", [])]
    now = [(f.name, str(f.type)) for f in schema]
    if before and before != now:
        raise InvalidInput(
            f"the query's columns or types changed since {latest.ref} (was: "
            f"{', '.join(f'{n} {t}' for n, t in before)}; now: "
            f"{', '.join(f'{n} {t}' for n, t in now)}): backfill every window, or import into "
            "a new dataset"
        )


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


def _windows_digest(schema: pa.Schema, windows: list[w.Recorded]) -> str:
    digest = hashlib.sha256(f"windows\n{schema_text(schema)}\n".encode())
    for r in windows:
        digest.update(
            f"{w.to_text(r.window.start)}\0{w.to_text(r.window.end)}\0{r.rows}\0{r.digest}\n".encode()
        )
    return digest.hexdigest()


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
    target: Target, engine: Engine, server: str, source: SqlSource, planned: _Planned
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
