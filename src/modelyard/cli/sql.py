"""``datasets import-sql``: a warehouse query into a dataset version."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from modelyard.cli.options import AsJson, option_errors
from modelyard.cli.output import print_json, say
from modelyard.cli.state import parse_pairs, state
from modelyard.sql.source import Incremental, SqlSource

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_amount(text: str, option: str) -> int | dt.timedelta:
    """``900`` (a count, or seconds for a time watermark), or ``15m``, ``2h``, ``1d``."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"{option} {text!r}: write a number, or 30s, 15m, 2h, 1d")
    return dt.timedelta(**{_UNITS[match[2]]: float(match[1])})


def import_sql(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME of the dataset")],
    connection: Annotated[str, typer.Option(help="A connection named in the settings.")],
    query_file: Annotated[
        Path | None, typer.Option(help="File holding the query (:name marks a parameter).")
    ] = None,
    query: Annotated[str | None, typer.Option(help="The query itself.")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE for :NAME, bound by the driver")
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="adbc, psycopg, sqlite, sqlalchemy (default: automatic)")
    ] = None,
    watermark: Annotated[
        str | None, typer.Option(help="Incremental: the column that grows (id, timestamp).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Incremental: where the first import starts.")
    ] = None,
    lag: Annotated[
        str, typer.Option(help="Incremental: newer rows wait (15m, 2h; a count for ids).")
    ] = "0",
    window: Annotated[
        str | None, typer.Option(help="Incremental: one part per window of this size.")
    ] = None,
    verify: Annotated[
        str, typer.Option(help="Incremental: recount the 'last' window for late rows, or 'all'.")
    ] = "last",
    backfill: Annotated[
        str | None,
        typer.Option(
            help="Incremental: import START..END again (START empty: from the first row)."
        ),
    ] = None,
    type: Annotated[
        list[str] | None, typer.Option("--type", help="COLUMN=ARROW_TYPE, e.g. day=date32")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds before the query is cancelled.")
    ] = None,
    split_by: Annotated[
        str | None,
        typer.Option(help="Read ranges of this (indexed) integer, date or timestamp column..."),
    ] = None,
    parallel: Annotated[
        int, typer.Option(help="...over this many connections sharing one snapshot.")
    ] = 1,
    description: Annotated[str, typer.Option()] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Commit even when the content equals the latest.")
    ] = False,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Commit a version even without rows.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Run a query in one read-only snapshot and commit its rows as the next version of a
    dataset, in Parquet parts (nothing is committed when they equal the latest version's)."""
    if (query_file is None) == (query is None):
        raise typer.BadParameter("give the query with --query-file FILE or --query TEXT")
    text = query if query is not None else _read(query_file)
    incremental = None
    try:
        if watermark is not None:
            incremental = Incremental(
                column=watermark,
                start=start,
                lag=parse_amount(lag, "--lag"),
                window=parse_amount(window, "--window") if window else None,
                verify=verify,
            )
        elif start is not None or backfill is not None or window is not None:
            raise typer.BadParameter("--start, --window and --backfill need --watermark COLUMN")
        source = SqlSource(
            connection=connection,
            query=text,
            params=dict(parse_pairs(param or [], "--param")),
            engine=engine,
            incremental=incremental,
            types=parse_pairs(type or [], "--type"),
            timeout_seconds=timeout,
            split_by=split_by,
            parallel=parallel,
            description=description,
        )
    except ValidationError as exc:
        flags = {
            "column": "--watermark",
            "params": "--param",
            "types": "--type",
            "timeout_seconds": "--timeout",
            "split_by": "--split-by",
            "parallel": "--parallel",
        }
        raise option_errors(exc, flags) from None
    bounds: tuple[Any, Any] | None = None
    if backfill is not None:
        lower, sep, upper = backfill.partition("..")
        if not sep or not upper:
            raise typer.BadParameter(f"--backfill {backfill!r}: write START..END or ..END")
        bounds = (lower or None, upper)
    client = state(ctx).client()
    result = client.import_sql(ref, source, force=force, allow_empty=allow_empty, backfill=bounds)
    if as_json:
        print_json(result)
        return
    say(result.summary() + f" [{result.engine}, {result.seconds:.2f} s]")


def _read(path: Path | None) -> str:
    assert path is not None
    try:
        return path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"--query-file {path}: {exc.strerror or exc}") from exc
