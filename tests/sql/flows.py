"""Pipelines that import from the warehouse, for tests/sql/test_task.py."""

from __future__ import annotations

from modelyard.pipelines.artifacts import Dataset, Input
from modelyard.pipelines.dsl import importer, pipeline, step
from modelyard.sql import Incremental, sql_import


@step
def count_rows(ledger: str, tag: str, data: Input[Dataset]) -> int:
    import pyarrow.parquet as pq

    rows: int = pq.read_table(data.path).num_rows
    with open(ledger, "a") as handle:
        handle.write(f"{tag} {rows} {data.metadata.get('ref', '')}\n")
    return rows


@pipeline
def nightly_import(ledger: str) -> None:
    events = sql_import(
        "team/events",
        connection="lite",
        query="SELECT id, name FROM events WHERE id >= :low",
        params={"low": 1},
        incremental=Incremental(column="id"),
    )
    count_rows(ledger=ledger, tag="imported", data=events)


@pipeline
def train_on_events(events: str, ledger: str) -> None:
    count_rows(ledger=ledger, tag="trained", data=importer("dataset", events))


@pipeline
def from_the_pooler(ledger: str) -> None:
    rows = sql_import(
        "team/pooled", connection="bouncer", query="SELECT g FROM generate_series(1, 5) g"
    )
    count_rows(ledger=ledger, tag="pooled", data=rows)


@pipeline
def broken_pooler(ledger: str) -> None:
    rows = sql_import("team/broken", connection="bouncer", query="SELECT * FROM missing_table")
    count_rows(ledger=ledger, tag="never", data=rows)
