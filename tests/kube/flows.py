"""Pipelines the Kubernetes step backend's tests run as Jobs."""

from __future__ import annotations

import time
from pathlib import Path

from modelyard.pipelines.artifacts import Dataset, Input, Output
from modelyard.pipelines.dsl import pipeline, step


@step
def produce(rows: int, out: Output[Dataset]) -> int:
    Path(out.path).write_text("".join(f"row {i}\n" for i in range(rows)))
    print(f"produced {rows} rows")
    return rows


@step
def consume(data: Input[Dataset]) -> int:
    rows = len(Path(data.path).read_text().splitlines())
    print(f"consumed {rows} rows")
    return rows


@pipeline
def two_steps(ledger: str, rows: int = 3) -> None:
    made = produce(rows=rows)
    consume(data=made.outputs["out"])


@step(cache=False)
def wait_forever(ledger: str) -> None:
    print("waiting", flush=True)
    while True:
        time.sleep(0.05)


@pipeline
def waiting(ledger: str) -> None:
    wait_forever(ledger=ledger)


@step(cache=False)
def broken(ledger: str) -> None:
    raise RuntimeError("no such table: events")


@pipeline
def failing(ledger: str) -> None:
    broken(ledger=ledger)
