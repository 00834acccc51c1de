"""``sql_import``: a pipeline task that imports a query into a dataset version, then hands the
dataset to the tasks that read it::

    @pipeline
    def nightly() -> None:
        events = sql_import(
            "shop/events",
            connection="warehouse",
            query="SELECT * FROM events WHERE region = :region",
            params={"region": "eu"},
            incremental=Incremental(column="created_at", lag=900),
        )
        train(data=events)

Like ``importer`` it outputs a ``Dataset``; unlike it, it always runs (never cached): each run
asks the warehouse what is new. Its step runs modelyard's own code (``run_step`` below) in its own
process, which gets the control plane's URL, a key that may edit the run's namespace only, and
the control plane's connections (no secrets: the passwords come from the variable or the file
each connection names). A new version triggers whatever waits on ``dataset.version.committed``;
an unchanged result commits nothing and hands on the latest version.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from modelyard.errors import InvalidInput
from modelyard.pipelines.artifacts import Dataset, Output
from modelyard.pipelines.dsl import ArtifactRef, PipelineValue, Step, step
from modelyard.sql.source import Incremental, SqlSource
from modelyard.types import ModelRef

FUNCTION = "modelyard.sql.task:run_step"


def run_step(
    dataset: str,
    source: dict[str, Any],
    force: bool,
    allow_empty: bool,
    data: Output[Dataset],
) -> str:
    """The step: import, then put the version's files at ``data.path``; returns its ref."""
    from modelyard.client import Client

    with Client() as client:
        result = client.import_sql(
            dataset, SqlSource.model_validate(source), force=force, allow_empty=allow_empty
        )
        print(result.summary(), flush=True)
        if result.version is None:
            raise InvalidInput(f"{dataset} has no version to hand on: {result.reason}")
        folder = client.pull(ModelRef.parse(result.version.ref), kind="dataset")
    _link_tree(folder, Path(data.path))
    data.metadata.update(
        ref=result.version.ref,
        committed=result.committed,
        rows_read=result.rows,
        content_sha256=result.version.tags.get("sql.content_sha256"),
    )
    return result.version.ref


def _link_tree(source: Path, dest: Path) -> None:
    """The pulled version's files at ``dest``: hard links where the file system allows."""
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if relative.name.startswith("."):  # the cache's own marker
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    dest.mkdir(parents=True, exist_ok=True)


def _builtin_step() -> Step[Any, str]:
    made = step(name="sql-import", cache=False)(run_step)
    return Step(made.func, made.spec.model_copy(update={"function": FUNCTION}))


_STEP = _builtin_step()


def sql_import(
    dataset: str | PipelineValue,
    *,
    connection: str,
    query: str,
    params: dict[str, Any] | None = None,
    incremental: Incremental | None = None,
    engine: str | None = None,
    types: dict[str, str] | None = None,
    timeout_seconds: float | None = None,
    split_by: str | None = None,
    parallel: int = 1,
    force: bool = False,
    allow_empty: bool = False,
    retries: int = 0,
) -> ArtifactRef:
    """Inside a ``@pipeline``: import ``query`` on ``connection`` into the dataset ``dataset``
    (``namespace/name``) and return that version as a ``Dataset`` input for other tasks."""
    if isinstance(dataset, str):
        parsed = ModelRef.parse(dataset)
        if parsed.ref != "latest":
            raise InvalidInput(f"sql_import into {dataset!r}: give namespace/name, no version")
    source = SqlSource(
        connection=connection,
        query=query,
        params=params or {},
        incremental=incremental,
        engine=engine,
        types=types or {},
        timeout_seconds=timeout_seconds,
        split_by=split_by,
        parallel=parallel,
    )
    task = _STEP(
        dataset=dataset,
        source=source.model_dump(mode="json", exclude_defaults=True),
        force=force,
        allow_empty=allow_empty,
    )
    if retries:
        task.set_retry(retries)
    return task.outputs["data"]
