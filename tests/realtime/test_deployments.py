"""Realtime deployments are deployments: revisions pinning a model version, push deploys on
commit, a worker replica per revision that replaces the one before once ready, no requests routed
to it by the gateway, and a kind fixed at creation."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.errors import Conflict, InvalidInput, NotFound
from modelyard.registry.records import VersionSpec
from modelyard.serving.states import ReplicaState, Workload
from modelyard.testing import wait_for
from tests.conftest import Serving, iris_model

pytestmark = pytest.mark.slow
FUNCTION = "tests.realtime.functions:score"


def _revisions(serving: Serving) -> list[tuple[int, str, int]]:
    info = serving.client.get_deployment("team", "scorer")
    return [(r.number, r.state, len(r.replicas)) for r in info.revisions]


def _alive(pid: int | None) -> bool:
    try:  # a zombie (exited, not reaped yet) has an empty command line
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def _latest_model(serving: Serving, entity: str) -> str | None:
    answer = serving.http.get(f"/team/predictions/scorer/{entity}")
    return answer.json()["model"] if answer.status_code == 200 else None


@pytest.mark.parametrize("realtime_env", ["embedded"], indirect=True)
def test_revisions_push_deploys_and_replacement(serving: Serving, tmp_path: Path) -> None:
    client = serving.client
    client.gateway_url = serving.gateway
    client.push("team/iris", iris_model(tmp_path / "v1"), VersionSpec(runtime="sklearn"))
    rt = client.realtime
    rt.create_stream("team", "clicks")
    with pytest.raises(NotFound, match="stream team/nope does not exist"):
        rt.create("team", "scorer", stream="nope", function=FUNCTION)
    with pytest.raises(InvalidInput, match="model is required"):
        client.request("POST", "/namespaces/team/deployments", json={"name": "bare"})
    rt.create("team", "scorer", stream="clicks", function=FUNCTION, model="iris@latest")
    info = client.get_deployment("team", "scorer")
    assert [(r.number, r.workload, r.model_version) for r in info.revisions] == [
        (1, Workload.REALTIME_WORKER, 1)
    ]
    wait_for(lambda: _revisions(serving) == [(1, "ready", 1)], 60, "revision 1 running")
    assert rt.get("team", "scorer").status.startswith("running (pid ")
    # the gateway routes no inference to a realtime deployment: predictions are read instead
    answer = serving.http.post("/team/scorer/v2/models/scorer/infer", json={"inputs": []})
    assert answer.status_code == 404
    stream = client.stream("team", "clicks")
    stream.send({"event_id": "e1", "user_id": "u1", "type": "cart", "n": 1})
    wait_for(lambda: _latest_model(serving, "u1") == "team/iris@1", 60, "a prediction of v1")

    (first,) = client.get_deployment("team", "scorer").revisions[0].replicas
    assert first.pid is not None
    # a commit makes a revision pinning the new version; its worker replaces the first one
    client.push(
        "team/iris", iris_model(tmp_path / "v2", max_iter=50), VersionSpec(runtime="sklearn")
    )
    wait_for(
        lambda: _revisions(serving) == [(1, "retired", 0), (2, "ready", 1)],
        60,
        "revision 2 replacing revision 1",
    )
    assert client.get_deployment("team", "scorer").revisions[1].model_version == 2
    # the first worker finishes what it holds and exits: from then on only the second one works
    wait_for(lambda: not _alive(first.pid), 30, "the first worker gone")
    stream.send({"event_id": "e2", "user_id": "u1", "type": "cart", "n": 2})
    wait_for(lambda: _latest_model(serving, "u1") == "team/iris@2", 60, "a prediction of v2")

    # the kind is fixed at creation, and it runs its latest ready revision; nothing changes
    with pytest.raises(Conflict, match="fixed at creation"):
        client.update_deployment("team", "scorer", realtime=None)
    with pytest.raises(InvalidInput, match="runs its latest ready revision"):
        client.set_traffic("team", "scorer", [{"revision": 1, "percent": 100}])
    with pytest.raises(InvalidInput, match="no requests to split between revisions, so no canary"):
        client.set_strategy("team", "scorer", strategy="canary")
    assert len(client.get_deployment("team", "scorer").revisions) == 2
    # a change of the spec through the realtime view is a revision too
    assert rt.update("team", "scorer", concurrency=2).spec.concurrency == 2
    wait_for(lambda: _revisions(serving)[-1] == (3, "ready", 1), 60, "revision 3 running")
    assert rt.get("team", "scorer").revision == 3
    replicas = client.get_deployment("team", "scorer").revisions[-1].replicas
    assert [r.state for r in replicas] == [ReplicaState.READY]

    # deleting it stops its worker and forgets its predictions
    rt.delete("team", "scorer")
    wait_for(lambda: _latest_model(serving, "u1") is None, 10, "the predictions gone")
    with pytest.raises(NotFound):
        client.get_deployment("team", "scorer")
