"""``sql_import`` in a pipeline, and the pipeline a new dataset version triggers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from modelyard.client import Client
from modelyard.pipelines.records import ScheduleSpec
from modelyard.settings import Settings
from tests.sql import flows
from tests.sql.conftest import Lite


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The control plane's own connections: what its pipeline steps import from."""
    return Settings(
        home=tmp_path / "home",
        api_port=0,
        connections={"lite": {"url": f"sqlite:///{tmp_path / 'warehouse.db'}"}},
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def runs_of(client: Client, pipeline: str) -> list[str]:
    return [r.id for r in client.list_runs("team", pipeline)]


def wait_runs(client: Client, pipeline: str, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(found := runs_of(client, pipeline)) < count:
        assert time.monotonic() < deadline, f"{pipeline} has {len(found)} runs, not {count}"
        time.sleep(0.05)
    for run_id in found:
        assert client.wait_run("team", run_id, timeout).state == "succeeded", run_id
    return found


def test_a_pipeline_imports_and_the_new_version_triggers_training(
    client: Client, lite: Lite, tmp_path: Path
) -> None:
    assert lite.path == tmp_path / "warehouse.db"
    lite.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT);")
    lite.execute("INSERT INTO events VALUES (?, ?)", [(i, f"e{i}") for i in range(1, 101)])
    ledger = tmp_path / "ledger"
    client.register_pipeline("team", flows.nightly_import)
    client.register_pipeline("team", flows.train_on_events)
    client.create_schedule(
        "team",
        ScheduleSpec(
            name="train-on-new-events",
            pipeline="train-on-events",
            on="dataset.version.committed",
            target="team/events",
            param="events",
            params={"ledger": str(ledger)},
        ),
    )

    def nightly() -> None:
        run = client.run_pipeline("team", "nightly-import", {"ledger": str(ledger)})
        ended = client.wait_run("team", run.id, 60)
        assert ended.state == "succeeded", "\n".join(client.run_logs("team", run.id))

    nightly()
    wait_runs(client, "train-on-events", 1)
    assert sorted(lines(ledger)) == ["imported 100 team/events@1", "trained 100 team/events@1"]
    version = client.get_version("team/events@1", kind="dataset")
    assert version.lineage == {"run": None, "step": None, "inputs": []}
    assert version.tags["sql.connection"] == "lite"

    nightly()  # nothing new: no version, no triggered run; the latest is handed on
    assert len(lines(ledger)) == 2  # the same dataset: counting it again hit the cache
    assert len(runs_of(client, "train-on-events")) == 1
    assert len(client.list_versions("team/events", kind="dataset")) == 1

    lite.execute("INSERT INTO events VALUES (?, ?)", [(i, f"e{i}") for i in range(101, 121)])
    nightly()
    wait_runs(client, "train-on-events", 2)
    assert sorted(lines(ledger)[-2:]) == ["imported 120 team/events@2", "trained 120 team/events@2"]


def test_the_task_is_checked_when_the_pipeline_compiles() -> None:
    from modelyard.errors import InvalidInput
    from modelyard.pipelines.dsl import pipeline
    from modelyard.pipelines.kfp import to_kfp_yaml
    from modelyard.sql import sql_import

    spec = flows.nightly_import.compile()
    step = spec.steps["sql-import"]
    assert step.function == "modelyard.sql.task:run_step" and not step.cache
    (task,) = [t for t in spec.tasks if t.step == "sql-import"]
    assert task.params["source"].const["incremental"] == {"column": "id"}
    with pytest.raises(InvalidInput, match="runs only on modelyard's executor"):
        to_kfp_yaml(spec)

    @pipeline
    def pinned() -> None:
        sql_import("team/events@3", connection="lite", query="SELECT 1")

    with pytest.raises(InvalidInput, match="give namespace/name, no version"):
        pinned.compile()
    with pytest.raises(InvalidInput, match="called outside a @pipeline"):
        sql_import("team/events", connection="lite", query="SELECT 1")
