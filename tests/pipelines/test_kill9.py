"""kill -9 of a real `modelyard up` in the middle of a run: the step process dies with it, and the
run resumes when the control plane starts again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelyard.testing import Platform, wait_for
from tests.pipelines import flows

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_kill_9_mid_run_resumes_without_rerunning_finished_steps(
    tmp_path: Path, platforms: list[Platform]
) -> None:
    home = tmp_path / "home"
    platform = Platform(home, f"sqlite:///{home / 'modelyard.db'}")
    platforms.append(platform)
    client = platform.start()
    client.create_namespace("team")
    client.register_pipeline("team", flows.gated)
    ledger, release = tmp_path / "ledger", tmp_path / "release"
    run = client.run_pipeline("team", "gated", {"ledger": str(ledger), "release": str(release)})
    wait_for(lambda: ledger.exists() and "gate" in ledger.read_text(), 60, "the gate step")
    step_pids = [int(Path(f"{release}.pid").read_text())]
    assert step_pids
    platform.kill()
    client.close()
    wait_for(lambda: not any(alive(pid) for pid in step_pids), 10, "the step to die too")

    client = platform.start()
    try:
        release.write_text("go")
        final = client.wait_run("team", run.id, timeout=60)
        assert final.state == "succeeded", final.reason
        assert ledger.read_text().splitlines().count("make 3") == 1
        assert [s.state for s in final.steps if s.node == "gate"] == ["interrupted", "succeeded"]
    finally:
        platform.kill()
        client.close()
