"""A split read: one snapshot's result read as ranges of a column, over several connections.

The import's own session finds the column's smallest and largest value, cuts the range between
them into ``parallel`` ranges of equal width and exports its snapshot; a connection per further
range joins that snapshot (``SET TRANSACTION SNAPSHOT``), so every range sees the data the first
one sees, whatever is written meanwhile. Each range is read, digested and written to parts of its
own in a thread of its own: the server's side of the read, one backend per connection, then runs
on every core, which one connection's COPY cannot (bench/RESULTS.md, 2026-12-07 05:19).

The first range also holds the rows whose column is NULL. The parts are ordered range by range,
and the content digest covers the ranges in order, with their bounds, rows and digests, as an
incremental import's covers its windows: the same data read with the same split digests the
same (committed again, it commits nothing); read with another split, or none, it digests
differently.

Each range is a query of its own (``SELECT * FROM (query) WHERE column >= a AND column < b``):
with an index on the column each reads its own rows; without one, each scans them all.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import TYPE_CHECKING, Any

from modelyard.errors import InvalidInput
from modelyard.sql import windows as w
from modelyard.sql.digest import schema_text
from modelyard.sql.engines import Session
from modelyard.sql.incremental import ALIAS, condition, over, windows_digest
from modelyard.sql.parts import PartWriter

if TYPE_CHECKING:
    from modelyard.sql.snapshot import Planned, Run


class Stopped(Exception):
    """A range of a split read stopped because another range failed (``Run.stop``)."""


def plan(run: Run, session: Session, allow_empty: bool) -> Planned:
    """``run``'s query read in ranges of its split column, the first in ``session``."""
    source = run.source
    assert source.split_by is not None
    column = f"{ALIAS}.{session.quote(source.split_by)}"
    params = dict(source.params)
    smallest, largest = session.first_row(over(run, f"min({column}), max({column})"), params)
    if smallest is None:  # no rows, or NULL in every row: nothing to split
        return run.snapshot(session, allow_empty)
    if isinstance(smallest, bool) or not isinstance(smallest, int | dt.date):
        held = {"str": "text", "float": "floating-point", "Decimal": "numeric"}
        name = type(smallest).__name__
        raise InvalidInput(
            f"the split column {source.split_by!r} holds {held.get(name, name)} values: split "
            "by an integer, date or timestamp column"
        )
    ranges = _ranges(smallest, largest, source.parallel)
    snapshot = session.export_snapshot()
    sessions = [session]
    read: list[tuple[Any, PartWriter] | None] = [None] * len(ranges)
    errors: list[BaseException] = []

    def read_range(i: int) -> None:
        try:
            bound = dict(params)
            where = condition(column, ranges[i], bound)
            if i == 0:
                where = f"({where} OR {column} IS NULL)"
            query = f"{over(run, '*')} WHERE {where}"
            (writer,), schema = run.write(sessions[i], query, bound, run.folder / f"range-{i:03d}")
            writer.close()
            read[i] = schema, writer
        except BaseException as exc:  # raised below, once every range has stopped
            errors.append(exc)
            run.stop.set()

    threads = [
        threading.Thread(target=read_range, args=(i,), name=f"modelyard-sql-range-{i}")
        for i in range(1, len(ranges))
    ]
    try:
        for _ in threads:
            sessions.append(run.engine.open(run.target, source.timeout_seconds, snapshot))
        for thread in threads:
            thread.start()
        read_range(0)
    finally:
        if errors or len(sessions) < len(ranges):
            run.stop.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join()
        for other in sessions[1:]:
            other.close()
    stopped = [e for e in errors if not isinstance(e, Stopped)]
    if errors:
        raise (stopped or errors)[0]
    return _planned(run, ranges, [r for r in read if r is not None])


def _ranges(smallest: Any, largest: Any, parallel: int) -> list[w.Window]:
    """``[smallest, largest]`` as up to ``parallel`` half-open ranges of equal width, the first
    open below (for the NULLs' sake, and a value that sorts first), none empty."""
    if isinstance(smallest, int):
        width = largest - smallest + 1
        cuts = [smallest + width * i // parallel for i in range(1, parallel)]
        after = largest + 1
    else:
        span = largest - smallest
        cuts = [smallest + span * i / parallel for i in range(1, parallel)]
        after = largest + (dt.timedelta(days=1) if type(largest) is dt.date else _MICRO)
    bounds = [c for i, c in enumerate(cuts) if smallest < c and (i == 0 or cuts[i - 1] < c)]
    starts: list[Any] = [None, *bounds]
    return [w.Window(start, end) for start, end in zip(starts, [*bounds, after], strict=True)]


_MICRO = dt.timedelta(microseconds=1)


def _planned(run: Run, ranges: list[w.Window], read: list[tuple[Any, PartWriter]]) -> Planned:
    schema = read[0][0]
    if any(schema_text(other) != schema_text(schema) for other, _ in read):
        raise InvalidInput("the query's columns changed between two ranges of the split")
    planned = run.planned(schema)
    recorded = []
    for seq, (window, (_, writer)) in enumerate(zip(ranges, read, strict=True), start=1):
        planned.parts.extend(writer.parts)
        files = tuple(p.relative_to(run.folder).as_posix() for p in writer.parts)
        recorded.append(w.Recorded(window, writer.rows, writer.digest.hexdigest(), files, seq))
    planned.read = planned.rows = sum(r.rows for r in recorded)
    planned.content = windows_digest(schema, recorded)
    planned.split = recorded
    return planned
