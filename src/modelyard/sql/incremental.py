"""An incremental import: the windows over a watermark column that are new since the previous
version, read in the import's one snapshot (:mod:`modelyard.sql.snapshot` runs it and commits).

- A first import asks the database for the column's range (refusing NULLs, which no window
  would hold) and takes the watermark's kind from its type in the result; a later one goes on
  from the windows the previous version recorded, by the same column and kind.
- Before it reads new rows, a later import recounts the last window imported (every window,
  with ``verify="all"``): rows that arrived there late mean the watermark is not monotonic (or
  the lag too short), and the import is refused, naming their values, rather than missing them
  for good.
- Each new window is read into parts of its own; a first import's tail window is split off the
  same read. The previous version's windows are kept as they are: the new version lists their
  parts by digest, neither uploaded nor copied again. The content digest covers every window,
  kept and new.
- A backfill reads ``[start, end)`` again, in place of the windows it covers.

Which windows are due is pure logic, in :mod:`modelyard.sql.windows`; this module asks the
database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from modelyard.errors import Conflict, InvalidInput
from modelyard.registry.records import VersionInfo
from modelyard.sql import windows as w
from modelyard.sql.digest import schema_text
from modelyard.sql.engines import Session
from modelyard.sql.engines.base import plain
from modelyard.sql.source import TAG_WATERMARK, TAG_WATERMARK_KIND, TAG_WINDOWS

if TYPE_CHECKING:
    from modelyard.sql.snapshot import Clock, Planned, Registry, Run

ALIAS = "modelyard_q"


def over(run: Run, what: str) -> str:
    """``SELECT what`` over the source's query."""
    return f"SELECT {what} FROM ({run.source.query}) AS {ALIAS}"


def plan(
    run: Run,
    session: Session,
    registry: Registry,
    latest: VersionInfo | None,
    clock: Clock,
    backfill: tuple[Any, Any] | None,
) -> Planned | str:
    """The new windows of ``run``'s incremental source (``backfill``: the windows of that
    range, in place of those it covers), read in ``session`` after the check for late rows,
    planned as the next version of ``latest``; or why nothing is due."""
    spec = run.source.incremental
    assert spec is not None
    column = f"{ALIAS}.{session.quote(spec.column)}"
    params = dict(run.source.params)
    history = _history(latest, spec.column)
    below: int | None = None  # rows under the history's end, when counted with the largest
    smallest: Any = None  # a first import's smallest watermark: where its range starts
    if history is None:
        # Two statements, not one pass with count(*): with an index on the column, min and
        # max are two probes and the NULLs a range of it (3 ms, not 460, at 10M rows).
        # Without one, they are two scans where one would do: such a column costs a scan at
        # every later import anyway.
        smallest, largest = session.first_row(over(run, f"min({column}), max({column})"), params)
        (nulls,) = session.first_row(f"{over(run, 'count(*)')} WHERE {column} IS NULL", params)
        if nulls:
            raise Conflict(
                f"the watermark column {spec.column!r} is NULL in {nulls} rows: they would "
                "never fall into a window; filter them out or pick another column"
            )
        if largest is None and spec.start is None:
            return "the query returned no rows: nothing committed"
        kind = _kind(run, session, column, params)
    else:
        kind = history.kind
        largest = None
        if kind == "int" and backfill is None:  # a backfill's windows end where it says
            largest, below = _largest(run, session, history, column, params)
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
                over(run, f"min({column})"), column, w.Window(None, end), params
            )
            (first,) = session.first_row(query, bound)
            windows, replaced = w.backfill_windows(history, first, end, size)
            if windows:
                windows[0] = w.Window(None, windows[0].end)
        else:
            windows, replaced = w.backfill_windows(history, start, end, size)
    else:
        if history is not None:
            _verify(run, session, registry, latest, history, column, params, below)
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
    planned: Planned | None = None
    new: list[w.Recorded] = []
    for window in windows:
        folder = run.folder / f"window-{seq:06d}"
        query, bound = _windowed(over(run, "*"), column, window, params)
        whole = history is None and window.start is None and largest is not None
        if whole and window.end > largest:
            # Every row of the snapshot (NULLs were refused above): a bound the planner
            # cannot see would have it guess an index scan of the whole table.
            query, bound = over(run, "*"), dict(params)
        tail = None if cut is None else (spec.column, cut, run.folder / f"window-{seq + 1:06d}")
        writers, schema = run.write(session, query, bound, folder, tail)
        if planned is None:
            planned = run.planned(schema)
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
                    tuple(p.relative_to(run.folder).as_posix() for p in parts),
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
    planned.content = windows_digest(planned.schema, everything)
    planned.windows = everything
    return planned


def _kind(run: Run, session: Session, column: str, params: Mapping[str, Any]) -> w.Kind:
    """The watermark's kind, from its type in the result (SQLite, say, hands dates over as
    text)."""
    spec = run.source.incremental
    assert spec is not None
    probe = session.stream(over(run, column) + " WHERE 1 = 0", params, 1, run.types)
    for _ in probe.batches:  # none; reading to the end closes the cursor
        pass
    kind = plain(probe.schema).field(0).type
    name = spec.column
    if spec.column in run.types:
        kind = run.types[spec.column]
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
    run: Run, session: Session, history: w.History, column: str, params: Mapping[str, Any]
) -> tuple[Any, int | None]:
    """The largest watermark; and, when the check for late rows counts every row under the
    history's end (``verify="all"``, or a last window open below: after a first import
    without a start that recorded no tail: one with a window size, or over too small a
    range), that count too, in the same pass. Without an index on the column
    (a view, a join) the largest value costs a pass of its own otherwise."""
    spec = run.source.incremental
    last = history.last
    assert spec is not None and last is not None
    if spec.verify != "all" and last.window.start is not None:
        (largest,) = session.first_row(over(run, f"max({column})"), params)
        return largest, None
    bound = dict(params)
    under = condition(column, w.Window(None, last.window.end), bound)
    largest, below = session.first_row(
        over(run, f"max({column}), count(CASE WHEN {under} THEN 1 END)"), bound
    )
    return largest, int(below)


def _verify(
    run: Run,
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
    the rows under the history's end, when :func:`_largest` counted them already.

    The recount reads every row of the last window (every row imported, with
    ``verify="all"``). After a first import without a start, the last window is its tail
    (:func:`windows.tail_cut`: the last 1 % of the range, or the lag), not the whole table:
    late rows older than the tail are found by ``verify="all"`` only."""
    spec = run.source.incremental
    assert spec is not None and latest is not None
    last = history.last
    assert last is not None
    if spec.verify == "all":
        if below is None:
            query, bound = _windowed(
                over(run, "count(*)"), column, w.Window(None, last.window.end), params
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
            query, bound = _windowed(over(run, "count(*)"), column, recorded.window, params)
            (count,) = session.first_row(query, bound)
        if int(count) > recorded.rows:
            late = _late_values(run, session, registry, latest, recorded, column, params)
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
    run: Run,
    session: Session,
    registry: Registry,
    latest: VersionInfo,
    recorded: w.Recorded,
    column: str,
    params: Mapping[str, Any],
) -> list[str]:
    """Watermark values that have more rows now than the imported parts of the window."""
    spec = run.source.incremental
    assert spec is not None
    before: dict[Any, int] = {}
    if recorded.files:
        import pyarrow.parquet as pq

        folder = registry.folder(latest)
        for path in recorded.files:
            values = pq.read_table(folder / path, columns=[spec.column]).column(0)
            for item in pc.value_counts(values).to_pylist():
                before[item["values"]] = before.get(item["values"], 0) + item["counts"]
    query, bound = _windowed(over(run, column), column, recorded.window, params)
    result = session.stream(query, bound, run.source.batch_rows, run.types)
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
    return f"{inner} WHERE {condition(column, window, bound)}", bound


def condition(column: str, window: w.Window, bound: dict[str, Any]) -> str:
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


def windows_digest(schema: pa.Schema, windows: list[w.Recorded]) -> str:
    digest = hashlib.sha256(f"windows\n{schema_text(schema)}\n".encode())
    for r in windows:
        digest.update(
            f"{w.to_text(r.window.start)}\0{w.to_text(r.window.end)}\0{r.rows}\0{r.digest}\n".encode()
        )
    return digest.hexdigest()
