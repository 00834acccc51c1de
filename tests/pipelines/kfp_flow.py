"""Pipelines for the Kubeflow export test.

Kubeflow runs this module's source inside each step, so it imports nothing but the standard
library and modelyard's DSL. Steps append to a ledger file, so a test can tell which ran.
"""

from __future__ import annotations

from pathlib import Path

from modelyard.pipelines.artifacts import Dataset, Input, Metrics, Model, Output
from modelyard.pipelines.dsl import Collected, If, ParallelFor, importer, pipeline, step


def note(ledger: str, line: str) -> None:
    with open(ledger, "a") as handle:
        handle.write(line + "\n")


@step
def make(ledger: str, rows: int, out: Output[Dataset]) -> int:
    note(ledger, f"make {rows}")
    Path(out.path).write_text("row\n" * rows)
    return rows


@step(retries=2, backoff_seconds=0.5)
def train(
    ledger: str, data: Input[Dataset], model: Output[Model], metrics: Output[Metrics]
) -> float:
    rows = len(Path(data.path).read_text().splitlines())
    note(ledger, f"train {rows}")
    Path(model.path).write_text(f"weights for {rows} rows")
    metrics.log_metric("accuracy", rows / 100)
    return rows / 100


@step
def report(ledger: str, accuracy: float, verdict: str) -> None:
    note(ledger, f"report {verdict} {accuracy}")


@step
def total(ledger: str, parts: Input[list[Dataset]]) -> int:
    rows = sum(len(Path(p.path).read_text().splitlines()) for p in parts)
    note(ledger, f"total {rows} from {len(parts)}")
    return rows


@pipeline
def chain(ledger: str, rows: int = 10, sizes: list[int] = [1, 2, 3]) -> None:  # noqa: B006
    made = make(ledger=ledger, rows=rows)
    fit = train(ledger=ledger, data=made.outputs["out"])
    with If(fit.output > 0.05):
        report(ledger=ledger, accuracy=fit.output, verdict="good")
    with If(fit.output <= 0.05):
        report(ledger=ledger, accuracy=fit.output, verdict="poor")
    with ParallelFor(sizes) as size:
        part = make(ledger=ledger, rows=size).set_retry(1)
    total(ledger=ledger, parts=Collected(part.outputs["out"])).set_caching_options(False)


@step
def read(catalog: Input[Dataset], model: Input[Model]) -> int:
    return len(list(Path(catalog.path).iterdir())) + len(list(Path(model.path).iterdir()))


@pipeline
def from_registry(catalog: str = "team/catalog@latest") -> None:
    read(catalog=importer("dataset", catalog), model=importer("model", "team/clf@3"))
