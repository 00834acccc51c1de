"""What the CLI prints, and how.

Data is never read as rich markup (the consoles have markup off): a message holding
``'modelyard[sklearn]'`` prints as it is. Styles are given apart from the text (``say`` takes
``(text, style)`` parts). On a terminal, tables fit its width by folding long cells (nothing is cut
off) and progress bars are drawn; output that is not a terminal is plain and whole: no colours, no
wrapping at 80 columns, tables as aligned columns of full values, no progress bars.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

# markup, emoji codes (":thumbs_up:") and highlighting off: text is printed as it is
console = Console(markup=False, emoji=False, highlight=False)
errors = Console(stderr=True, markup=False, emoji=False, highlight=False)

Part = str | tuple[str, str]


def _emit(target: Console, text: Text) -> None:
    # soft_wrap: a line longer than the (assumed 80-column) width of a pipe is not split
    target.print(text, soft_wrap=not target.is_terminal)


def say(*parts: Part) -> None:
    """Print one message on stdout; each part is literal text or a (text, style) pair."""
    _emit(console, Text.assemble(*parts))


def note(*parts: Part) -> None:
    """A message on stderr: what happened, beside the data a command prints on stdout."""
    _emit(errors, Text.assemble(*parts))


def error(message: str) -> None:
    _emit(errors, Text.assemble(("error:", "bold red"), " ", message))


def jsonable(value: Any) -> Any:
    """Records (``to_dict``, or pydantic's JSON dump), and lists and mappings of them, as JSON
    values; anything else as it is."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "model_dump"):  # a model is iterable too: before the sequences
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return [jsonable(item) for item in value]
    return value


def print_json(value: Any) -> None:
    """What ``--json`` (``options.AsJson``) prints: ``value``, a record or a list of them
    included, as indented JSON on stdout."""
    text = json.dumps(jsonable(value), default=str, indent=2)
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def cell(value: Any) -> str:
    """A value as a table shows it: nothing for None, ``k=v`` lists for mappings."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return str(value)


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    keep: int = 1,
) -> None:
    """A table: on a terminal it fits the width by folding cells (the first ``keep`` columns,
    ids and names, are never folded); elsewhere plain aligned columns, each value whole."""
    cells = [[cell(v) for v in row] for row in rows]
    if not console.is_terminal:
        if title:
            console.print(title, soft_wrap=True)
        _plain(columns, cells)
        return
    out = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        expand=False,
    )
    for index, column in enumerate(columns):
        out.add_column(column, overflow="fold", no_wrap=index < keep)
    for row in cells:
        out.add_row(*row)
    console.print(out)


def _plain(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    lines = [list(columns), *([" ".join(c.split("\n")) for c in row] for row in rows)]
    widths = [max(cell_len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        padded = [c + " " * (w - cell_len(c)) for c, w in zip(line[:-1], widths, strict=False)]
        console.print("  ".join([*padded, line[-1]]).rstrip(), soft_wrap=True)


@contextmanager
def transfer_progress(description: str, total: int) -> Iterator[Callable[[str, int], None]]:
    """A byte progress bar on stderr; yields the callback the SDK calls with (path, bytes).

    The bar appears with the first bytes moved, so a push refused before any upload (a wrong
    name, a missing namespace) prints its error alone; on no terminal there is no bar."""
    progress: Progress | None = None
    task = None

    def advance(_path: str, count: int) -> None:
        nonlocal progress, task
        if not errors.is_terminal:
            return
        if progress is None:
            progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=errors,
                transient=False,
            )
            progress.start()
            task = progress.add_task(description, total=total)
        assert task is not None
        progress.advance(task, count)

    try:
        yield advance
    finally:
        if progress is not None:
            progress.stop()
