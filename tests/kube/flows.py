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


@step
def many_files(files: int, out: Output[Dataset]) -> int:
    folder = Path(out.path)
    folder.mkdir()
    for i in range(files):
        (folder / f"part-{i:04d}.txt").write_text(f"part {i}\n")
    return files


@step
def count_files(data: Input[Dataset]) -> int:
    return len(list(Path(data.path).iterdir()))


@pipeline
def folder_of_files(ledger: str, files: int = 300) -> None:
    made = many_files(files=files)
    count_files(data=made.outputs["out"])


@step(image="python:3.11-slim", cache=False)
def where_from(ledger: str) -> str:
    import modelyard

    return modelyard.__file__


@pipeline
def own_image(ledger: str) -> None:
    where_from(ledger=ledger)
