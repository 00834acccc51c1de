"""Pipelines the tests run. Steps record each execution in a file so tests can count them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from modelyard.pipelines.artifacts import Dataset, Input, Metrics, Model, Output
from modelyard.pipelines.dsl import Collected, If, ParallelFor, importer, pipeline, step


def mark(ledger: str, what: str) -> None:
    with open(ledger, "a") as handle:
        handle.write(what + "\n")


@step
def make(ledger: str, rows: int, out: Output[Dataset]) -> int:
    mark(ledger, f"make {rows}")
    Path(out.path).write_text("row\n" * rows)
    return rows


@step
def count(ledger: str, data: Input[Dataset]) -> int:
    mark(ledger, "count")
    return len(Path(data.path).read_text().splitlines())


@step
def train(
    ledger: str, data: Input[Dataset], model: Output[Model], metrics: Output[Metrics]
) -> float:
    rows = len(Path(data.path).read_text().splitlines())
    mark(ledger, f"train {rows}")
    Path(model.path).write_text(f"weights for {rows} rows")
    metrics.log_metric("accuracy", rows / 100)
    return rows / 100


@step
def total(ledger: str, parts: Input[list[Dataset]]) -> int:
    mark(ledger, f"total {len(parts)}")
    return sum(len(Path(p.path).read_text().splitlines()) for p in parts)


@pipeline
def chain(ledger: str, rows: int = 10, sizes: list[int] = [1, 2, 3]) -> None:  # noqa: B006
    made = make(ledger=ledger, rows=rows)
    counted = count(ledger=ledger, data=made.outputs["out"])
    with If(counted.output > 5):
        train(ledger=ledger, data=made.outputs["out"]).publish(
            "model", "team/clf", alias="candidate"
        )
    with ParallelFor(sizes) as size:
        part = make(ledger=ledger, rows=size)
    total(ledger=ledger, parts=Collected(part.outputs["out"]))


@step
def read_catalog(ledger: str, catalog: Input[Dataset]) -> int:
    files = sorted(p for p in Path(catalog.path).rglob("*") if p.is_file())
    mark(ledger, f"read {len(files)}")
    return len(files)


@pipeline
def from_registry(ledger: str, catalog: str = "team/catalog@latest") -> None:
    read_catalog(ledger=ledger, catalog=importer("dataset", catalog))


@step(retries=2, backoff_seconds=0.05)
def flaky(ledger: str, fail_times: int) -> int:
    attempts = Path(ledger).read_text().count("flaky") if Path(ledger).exists() else 0
    mark(ledger, "flaky")
    if attempts < fail_times:
        raise RuntimeError(f"transient failure {attempts + 1}")
    return attempts + 1


@pipeline
def retrying(ledger: str, fail_times: int = 2) -> None:
    flaky(ledger=ledger, fail_times=fail_times)


@step(timeout_seconds=1)
def hang(ledger: str, ignore_sigterm: bool = False) -> None:
    mark(ledger, "hang")
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(120)


@pipeline
def hanging(ledger: str, ignore_sigterm: bool = False) -> None:
    hang(ledger=ledger, ignore_sigterm=ignore_sigterm).set_timeout(60)


@pipeline
def timing_out(ledger: str) -> None:
    hang(ledger=ledger)


@step
def crash(ledger: str) -> None:
    mark(ledger, "crash")
    print("about to die", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


@pipeline
def crashing(ledger: str) -> None:
    crash(ledger=ledger)


@step(cache=False)
def gate(ledger: str, release: str) -> str:
    """Waits until the file ``release`` exists; leaves its pid in ``release``.pid."""
    Path(release + ".pid").write_text(str(os.getpid()))
    mark(ledger, "gate")
    while not Path(release).exists():
        time.sleep(0.02)
    return "opened"


@pipeline
def gated(ledger: str, release: str) -> None:
    first = make(ledger=ledger, rows=3)
    gate(ledger=ledger, release=release).after(first)
