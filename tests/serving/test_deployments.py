"""The deployments API: who may do what, revisions, and bad input that changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.errors import Conflict, Forbidden, InvalidInput, NotFound
from modelyard.registry.records import VersionSpec
from modelyard.serving.records import DeploymentSpec, SpecPatch
from modelyard.serving.states import Workload
from tests.conftest import iris_model

SKLEARN = VersionSpec(runtime="sklearn")


@pytest.fixture
def team(admin: Client, tmp_path: Path) -> Client:
    admin.create_namespace("team")
    admin.push("team/iris", iris_model(tmp_path / "v1"), SKLEARN)
    return admin


def test_bad_deployments_are_refused_and_change_nothing(team: Client) -> None:
    with pytest.raises(NotFound, match="namespace 'ghost' does not exist"):
        team.create_deployment("ghost", "iris", "iris@latest")
    with pytest.raises(NotFound, match="push a version first"):
        team.create_deployment("team", "iris", "nothing@latest")
    with pytest.raises(NotFound, match="iris@7 does not exist"):
        team.create_deployment("team", "iris", "iris@7")
    with pytest.raises(NotFound, match="iris@production does not exist"):
        team.create_deployment("team", "iris", "iris@production")
    with pytest.raises(InvalidInput):
        team.create_deployment("team", "Bad_Name", "iris@latest")
    with pytest.raises(InvalidInput, match="max_replicas"):
        team.create_deployment(
            "team", "iris", "iris@latest", autoscaling={"min_replicas": 3, "max_replicas": 2}
        )
    with pytest.raises(InvalidInput):
        team.create_deployment("team", "iris", "iris@latest", replicas=3)
    assert team.list_deployments("team") == []
    assert [e.type for e in team.events(follow=False) if e.type.startswith("deploy")] == []


def test_roles_decide_who_deploys(team: Client, tmp_path: Path) -> None:
    team.create_deployment("team", "iris", "iris@latest")
    _, viewer_token = team.create_key("viewer", {"team": "viewer"})
    _, invoker_token = team.create_key("invoker", {"team": "invoker"})
    with Client(team.url, viewer_token, cache_dir=tmp_path / "c1") as viewer:
        assert [d.name for d in viewer.list_deployments("team")] == ["iris"]
        with pytest.raises(Forbidden):
            viewer.delete_deployment("team", "iris")
        with pytest.raises(Forbidden):
            viewer.create_deployment("team", "other", "iris@latest")
    with (
        Client(team.url, invoker_token, cache_dir=tmp_path / "c2") as invoker,
        pytest.raises(Forbidden),
    ):
        invoker.get_deployment("team", "iris")
    with pytest.raises(Conflict, match="exists"):
        team.create_deployment("team", "iris", "iris@latest")
    team.delete_deployment("team", "iris")
    with pytest.raises(NotFound):
        team.get_deployment("team", "iris")


def test_a_revision_per_change_of_version_or_spec(plane: ControlPlane, team: Client) -> None:
    deployments = plane.deployments
    deployments.create("team", "iris", DeploymentSpec(model="iris@latest"))
    again = deployments.update("team", "iris", SpecPatch(timeout_s=60.0))
    assert [r.number for r in again.revisions] == [1]  # nothing changed: no new revision
    changed = deployments.update("team", "iris", SpecPatch(timeout_s=5.0))
    assert [r.number for r in changed.revisions] == [1, 2]
    assert changed.revisions[1].spec.timeout_s == 5.0
    assert changed.revisions[0].spec.timeout_s == 60.0  # revisions are immutable snapshots
    assert {r.workload for r in changed.revisions} == {Workload.MODEL_SERVER}
    assert deployments.follow("team", "iris", {"latest"}) == []  # same version: idempotent


def test_traffic_must_add_up_and_name_ready_revisions(team: Client) -> None:
    team.create_deployment("team", "iris", "iris@latest")
    with pytest.raises(InvalidInput, match="add up to 90"):
        team.set_traffic("team", "iris", [{"percent": 90}])
    with pytest.raises(InvalidInput, match="revision 5 of team/iris does not exist"):
        team.set_traffic("team", "iris", [{"revision": 5, "percent": 100}])
    with pytest.raises(InvalidInput, match="one target"):
        team.set_traffic(
            "team",
            "iris",
            [{"percent": 50, "tag": "a"}, {"revision": None, "percent": 50, "tag": "a"}],
        )
    assert [t.percent for t in team.get_deployment("team", "iris").traffic] == [100]
