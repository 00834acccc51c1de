from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.pipelines.dsl import Pipeline
from modelyard.pipelines.records import RunInfo
from modelyard.pipelines.states import FINISHED
from modelyard.settings import Settings


class Runner:
    """Registers and runs pipelines on a real control plane (executor thread, step processes)."""

    def __init__(self, plane: ControlPlane, tmp_path: Path) -> None:
        self.plane = plane
        self.ledger = tmp_path / "ledger.txt"

    def start(self, pipeline: Pipeline, **params: Any) -> str:
        self.plane.pipelines.register("team", pipeline.compile())
        run_id = self.plane.pipelines.create_run(
            "team", pipeline.name, {"ledger": str(self.ledger), **params}
        )
        self.plane.executor.wake()
        return run_id

    def wait(
        self, run_id: str, timeout: float = 60.0, until: tuple[str, ...] = FINISHED
    ) -> RunInfo:
        deadline = time.monotonic() + timeout
        while (run := self.plane.pipelines.get_run("team", run_id)).state not in until:
            assert time.monotonic() < deadline, f"run {run_id} still {run.state}"
            self.plane.events.wait(self.plane.events.last_id(), timeout=0.5)
        return run

    def run(self, pipeline: Pipeline, **params: Any) -> RunInfo:
        return self.wait(self.start(pipeline, **params))

    def executions(self) -> list[str]:
        return self.ledger.read_text().splitlines() if self.ledger.exists() else []


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Pipelines run on both metadata backends: SQLite and a real PostgreSQL."""
    return Settings(
        home=tmp_path / "home",
        api_port=0,
        pipeline_parallelism=4,
        step_grace_seconds=0.5,
        database_url=database_url,
    )


@pytest.fixture
def runner(settings: Settings, tmp_path: Path) -> Iterator[Runner]:
    plane = ControlPlane.build(settings)
    plane.namespaces.create("team")
    plane.start_controllers()
    yield Runner(plane, tmp_path)
    plane.close()
