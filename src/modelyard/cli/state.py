"""What every command shares: the settings (flags over env over file) and a lazily made client."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
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

from modelyard.client import Client
from modelyard.settings import LoadedSettings, load_settings

console = Console()
errors = Console(stderr=True)


@dataclass
class State:
    flags: dict[str, Any] = field(default_factory=dict)
    config_file: Path | None = None
    _loaded: LoadedSettings | None = None
    _client: Client | None = None

    def loaded(self, **more: Any) -> LoadedSettings:
        if more or self._loaded is None:
            self._loaded = load_settings({**self.flags, **more}, self.config_file)
        return self._loaded

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(settings=self.loaded().settings)
        return self._client


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    console.print(out)


@contextmanager
def transfer_progress(description: str, total: int) -> Iterator[Any]:
    """A byte progress bar; yields the callback the SDK calls with (path, bytes)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda _path, n: progress.advance(task, n)


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} {item!r}: write KEY=VALUE")
        pairs[key] = value
    return pairs
