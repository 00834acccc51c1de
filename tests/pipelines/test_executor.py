from __future__ import annotations

import hashlib
from pathlib import Path

from modelyard.controlplane import ControlPlane
from modelyard.registry.records import VersionSpec
from modelyard.settings import Settings
from modelyard.types import FileEntry
from tests.pipelines import flows
from tests.pipelines.conftest import Runner


def states(run: object) -> dict[str, str]:
    steps = run.steps  # type: ignore[attr-defined]
    return {s.node: s.state for s in steps}


def test_a_dag_runs_in_order_with_fan_out_condition_and_publishing(runner: Runner) -> None:
    run = runner.run(flows.chain, rows=10, sizes=[1, 2, 3])
    assert run.state == "succeeded", run.reason
    assert states(run) == {
        "make": "succeeded",
        "count": "succeeded",
        "train": "succeeded",
        "make-2[0]": "succeeded",
        "make-2[1]": "succeeded",
        "make-2[2]": "succeeded",
        "total": "succeeded",
    }
    results = {s.node: s.outputs["result"] for s in run.steps}
    assert results["count"] == 10 and results["total"] == 6 and results["train"] == 0.1
    order = runner.executions()
    assert order.index("make 10") < order.index("count") < order.index("train 10")
    assert order.index("total 3") > max(order.index(f"make {n}") for n in (1, 2, 3))

    model = runner.plane.versions.get("model", "team", "clf", "candidate")
    assert model.lineage["run"] == run.id and model.lineage["step"] == "train"
    assert model.metrics == {"accuracy": 0.1}
    assert [f.path for f in model.files] == ["model"]


def test_a_false_condition_skips_its_tasks(runner: Runner) -> None:
    run = runner.run(flows.chain, rows=3, sizes=[])
    assert run.state == "succeeded"
    assert states(run)["train"] == "skipped"
    assert "total 0" in runner.executions()
    assert "train 3" not in runner.executions()


def _push_catalog(plane: ControlPlane, name: str, files: dict[str, bytes]) -> int:
    draft = plane.versions.create_draft("dataset", "team", name, VersionSpec())
    entries = []
    for path, data in files.items():
        plane.versions.put_file("dataset", "team", name, draft.id, path, [data])
        entries.append(FileEntry(path, hashlib.sha256(data).hexdigest(), len(data)))
    version = plane.versions.commit("dataset", "team", name, draft.id, entries)
    assert version.number is not None
    return version.number


def test_cache_keys_on_content_not_names(runner: Runner) -> None:
    plane = runner.plane
    _push_catalog(plane, "catalog", {"a.jpg": b"A", "b.jpg": b"B"})
    first = runner.run(flows.from_registry, catalog="team/catalog@latest")
    assert states(first) == {"read-catalog": "succeeded"}

    # Same name, changed content: must run again.
    _push_catalog(plane, "catalog", {"a.jpg": b"A", "b.jpg": b"B changed"})
    second = runner.run(flows.from_registry, catalog="team/catalog@latest")
    assert states(second) == {"read-catalog": "succeeded"}

    # Identical content under a new name: must hit.
    _push_catalog(plane, "catalog-copy", {"a.jpg": b"A", "b.jpg": b"B"})
    third = runner.run(flows.from_registry, catalog="team/catalog-copy@1")
    assert states(third) == {"read-catalog": "cached"}
    assert runner.executions() == ["read 2", "read 2"]
    assert third.steps[0].cached_from is not None


def test_retries_back_off_and_then_succeed_or_fail_with_the_reason(runner: Runner) -> None:
    run = runner.run(flows.retrying, fail_times=2)
    assert run.state == "succeeded"
    assert [(s.attempt, s.state) for s in run.steps] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "succeeded"),
    ]
    assert "transient failure 1" in (run.steps[0].reason or "")
    runner.ledger.unlink()
    failed = runner.run(flows.retrying, fail_times=5)
    assert failed.state == "failed"
    assert failed.steps[-1].reason == "RuntimeError: transient failure 3"
    assert runner.executions().count("flaky") == 3
    log = runner.plane.executor.log_path(failed.id, "flaky").read_text()
    assert log.count("--- attempt") == 3 and "Traceback" in log


def test_a_step_past_its_timeout_is_killed_and_the_run_fails(runner: Runner) -> None:
    run = runner.run(flows.timing_out)
    assert run.state == "failed"
    assert run.steps[0].reason == "timed out after 1 s"


def test_a_step_killed_by_a_signal_fails_with_its_log_kept(runner: Runner) -> None:
    run = runner.run(flows.crashing)
    assert run.state == "failed"
    assert "killed by SIGKILL" in (run.steps[0].reason or "")
    assert "about to die" in runner.plane.executor.log_path(run.id, "crash").read_text()


def test_cancel_sends_sigterm_then_sigkill(runner: Runner) -> None:
    run_id = runner.start(flows.hanging, ignore_sigterm=True)
    runner.wait(run_id, until=("running",))
    while "hang" not in runner.executions():
        runner.plane.events.wait(runner.plane.events.last_id(), timeout=0.05)
    runner.plane.executor.cancel(run_id)
    run = runner.wait(run_id)
    assert run.state == "cancelled"
    assert run.steps[0].state == "cancelled"
    assert any("SIGKILL after" in h.message for h in run.history)


def test_one_failing_run_does_not_stop_another(runner: Runner) -> None:
    failing = runner.start(flows.crashing)
    fine = runner.start(flows.chain, rows=10, sizes=[1])
    assert runner.wait(failing).state == "failed"
    assert runner.wait(fine).state == "succeeded"


def test_a_run_resumes_after_a_control_plane_restart(settings: Settings, tmp_path: Path) -> None:
    release = tmp_path / "release"
    first = ControlPlane.build(settings)
    first.namespaces.create("team")
    first.start_controllers()
    runner = Runner(first, tmp_path)
    run_id = runner.start(flows.gated, release=str(release))
    while "gate" not in runner.executions():
        first.events.wait(first.events.last_id(), timeout=0.05)
    first.close()  # the control plane stops while `gate` runs

    second = ControlPlane.build(settings)
    second.start_controllers()
    try:
        resumed = Runner(second, tmp_path)
        release.write_text("go")
        run = resumed.wait(run_id)
        assert run.state == "succeeded"
        assert resumed.executions().count("make 3") == 1  # finished steps are not re-run
        gate = [(s.attempt, s.state) for s in run.steps if s.node == "gate"]
        assert gate == [(1, "interrupted"), (2, "succeeded")]
        messages = [h.message for h in run.history]
        assert "resumed after a control-plane restart" in messages
        assert any("interrupted by a control-plane stop" in m for m in messages)
    finally:
        second.close()
