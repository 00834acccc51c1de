"""The shadow strategy on a model server: a new revision gets a copy of every request beside
the stable one until promoted or rolled back by hand; nothing judges it."""

from __future__ import annotations

from pathlib import Path

from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.testing import wait_for
from tests.conftest import iris_model
from tests.delivery.test_rollouts import SKLEARN, percents, report, state


def test_a_shadow_revision_waits_for_a_decision_by_hand(
    admin: Client, plane: ControlPlane, tmp_path: Path
) -> None:
    admin.create_namespace("team")
    admin.push("team/iris", iris_model(tmp_path / "v1"), SKLEARN)
    admin.create_deployment(
        "team", "iris", "iris@latest", autoscaling={"min_replicas": 1, "max_replicas": 1}
    )
    admin.set_strategy("team", "iris", strategy="shadow")
    admin.wait_deployment("team", "iris", timeout=60)
    admin.push("team/iris", iris_model(tmp_path / "v2", max_iter=20), SKLEARN)
    wait_for(lambda: state(admin) == "running", 60, "the shadow rollout of revision 2", 0.05)
    rollout = admin.rollouts("team", "iris")[0]
    assert (rollout.strategy, rollout.stable, rollout.canary, rollout.percent) == (
        "shadow",
        1,
        2,
        0,
    )
    info = admin.get_deployment("team", "iris")
    assert percents(admin) == {1: 100, 2: 0}
    assert info.shadow is not None and (info.shadow.revision, info.shadow.percent) == (2, 100)
    # errors of the shadow roll nothing back: a shadow is decided by hand
    report(plane, admin, {1: (900, 0, 5.0), 2: (900, 300, 50.0)})
    plane.rollouts.drive()
    assert state(admin) == "running"
    promoted = admin.rollout_action("team", "iris", "promote")
    assert promoted.state == "promoted"
    info = admin.get_deployment("team", "iris")
    assert percents(admin) == {1: 0, 2: 100} and info.shadow is None
