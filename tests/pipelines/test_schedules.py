from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.errors import InvalidInput
from modelyard.events.consumers import DurableConsumer
from modelyard.pipelines.records import RunInfo, ScheduleSpec
from modelyard.pipelines.states import FINISHED
from modelyard.settings import Settings
from tests.conftest import Clock
from tests.pipelines import flows
from tests.pipelines.conftest import Runner
from tests.pipelines.test_executor import _push_catalog


@pytest.fixture
def clock() -> Clock:
    return Clock(dt.datetime(2026, 3, 28, 22, 30, tzinfo=dt.UTC))


@pytest.fixture
def plane(settings: Settings, clock: Clock, tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane on a simulated clock; schedules are fired by hand, nothing runs."""
    cp = ControlPlane.build(settings, clock=clock)
    cp.namespaces.create("team")
    cp.pipelines.register("team", flows.chain.compile())
    yield cp
    cp.close()


def schedule(plane: ControlPlane, **fields: object) -> None:
    spec = {"name": "hourly", "pipeline": "chain", "params": {"ledger": "/dev/null"}, **fields}
    plane.schedules.create("team", ScheduleSpec.model_validate(spec))


def runs(plane: ControlPlane) -> list[RunInfo]:
    return plane.pipelines.list_runs("team")


def test_after_downtime_one_run_without_catchup(plane: ControlPlane, clock: Clock) -> None:
    schedule(plane, interval_seconds=3600)
    assert plane.schedules.fire_due() is not None and runs(plane) == []
    clock.now += dt.timedelta(hours=5, minutes=10)
    plane.schedules.fire_due()
    assert len(runs(plane)) == 1
    plane.schedules.fire_due()
    assert len(runs(plane)) == 1  # the same slot never fires twice


def test_after_downtime_every_missed_slot_with_catchup(plane: ControlPlane, clock: Clock) -> None:
    schedule(plane, interval_seconds=3600, catchup=True, max_concurrency=10, overlap="wait")
    clock.now += dt.timedelta(hours=5, minutes=10)
    plane.schedules.fire_due()
    fired = sorted(r.created_at for r in plane.pipelines.list_runs("team"))
    assert len(fired) == 5


def test_an_overlapping_fire_is_skipped_past_max_concurrency(
    plane: ControlPlane, clock: Clock
) -> None:
    schedule(plane, cron="0 * * * *", timezone="Europe/Berlin")
    clock.now += dt.timedelta(minutes=31)
    plane.schedules.fire_due()
    clock.now += dt.timedelta(hours=1)
    plane.schedules.fire_due()
    assert len(runs(plane)) == 1  # the first run never started, so it still counts
    skipped = [e for e in plane.events.read(0, 1000) if e.type == "schedule.skipped"]
    assert len(skipped) == 1 and "still running" in skipped[0].data["reason"]


def test_paused_schedules_do_not_fire_and_resume_from_now(
    plane: ControlPlane, clock: Clock
) -> None:
    schedule(plane, interval_seconds=600)
    plane.schedules.set_paused("team", "hourly", True)
    clock.now += dt.timedelta(hours=2)
    plane.schedules.fire_due()
    assert runs(plane) == []
    info = plane.schedules.set_paused("team", "hourly", False)
    assert info.next_fire is not None and info.next_fire > clock.now
    plane.schedules.fire_due()
    assert runs(plane) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "61 * * * *"}, "does not parse"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 * * * *", "interval_seconds": 60}, "exactly one"),
        ({"on": "dataset.version.committed", "target": "team/x"}, "param"),
        ({"interval_seconds": 60, "params": {}}, "needs parameter 'ledger'"),
        ({"interval_seconds": 60, "pipeline": "nope"}, "does not exist"),
    ],
)
def test_bad_schedules_are_refused(
    plane: ControlPlane, fields: dict[str, object], message: str
) -> None:
    from modelyard.errors import NotFound

    with pytest.raises((InvalidInput, NotFound), match=message):
        schedule(plane, **fields)
    assert plane.schedules.list("team") == []


def test_a_new_dataset_version_starts_exactly_one_run(runner: Runner) -> None:
    plane = runner.plane
    plane.pipelines.register("team", flows.from_registry.compile())
    plane.schedules.create(
        "team",
        ScheduleSpec(
            name="on-catalog",
            pipeline="from-registry",
            on="dataset.version.committed",
            target="team/catalog",
            param="catalog",
            params={"ledger": str(runner.ledger)},
        ),
    )
    _push_catalog(plane, "catalog", {"a.jpg": b"A"})
    _push_catalog(plane, "catalog", {"a.jpg": b"A", "b.jpg": b"B"})
    _push_catalog(plane, "other", {"c.jpg": b"C"})  # not the target: no run

    def started() -> list[RunInfo]:
        return plane.pipelines.list_runs("team")

    deadline = time.monotonic() + 60
    while len(started()) < 2 or any(r.state not in FINISHED for r in started()):
        assert time.monotonic() < deadline, started()
        plane.events.wait(plane.events.last_id(), timeout=0.2)
    assert {r.state for r in started()} == {"succeeded"}, started()
    params = sorted(r.params["catalog"] for r in started())
    assert params == ["team/catalog@1", "team/catalog@2"]
    assert sorted(runner.executions()) == ["read 1", "read 2"]

    # Replaying the whole log (as after a lost cursor) starts nothing new.
    with plane.db.write() as session:
        DurableConsumer.reset(session, "schedules.triggers")
    plane.schedules.triggers.run_once()
    assert len(started()) == 2
