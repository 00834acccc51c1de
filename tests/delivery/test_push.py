"""Deploys pushed by commits, end to end: push a version, and the deployment that follows
``latest`` (or an alias) serves it within seconds, with no failed request on the way."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.registry.records import VersionSpec
from modelyard.testing import wait_for
from tests.conftest import Serving, iris_model

pytestmark = pytest.mark.slow
ROWS = [[5.9, 3.0, 4.2, 1.5]]
SKLEARN = VersionSpec(runtime="sklearn")


def served_version(serving: Serving) -> str:
    answer = serving.infer("iris", ROWS)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["model_version"])


def test_a_commit_is_served_and_the_old_revision_drains(serving: Serving, tmp_path: Path) -> None:
    client = serving.client
    client.push("team/iris", iris_model(tmp_path / "v1"), SKLEARN)
    client.create_deployment("team", "iris", "iris@latest")
    client.wait_deployment("team", "iris", timeout=60)
    with serving.load("iris", ROWS, workers=2) as load:
        client.push("team/iris", iris_model(tmp_path / "v2", max_iter=3), SKLEARN)
        wait_for(lambda: served_version(serving) == "2", 30, "version 2 to serve", 0.05)
    assert load.failures == []

    def retired() -> bool:
        first = client.get_deployment("team", "iris").revisions[0]
        return first.state == "retired" and not first.replicas

    wait_for(retired, 30, "revision 1 to drain and stop", 0.1)
    info = client.get_deployment("team", "iris")
    assert [(r.number, r.percent) for r in info.revisions] == [(1, 0), (2, 100)]
    assert info.status == "serving revision 2 (100%)"


def test_a_version_that_fails_to_load_gets_no_traffic(serving: Serving, tmp_path: Path) -> None:
    client = serving.client
    client.push("team/iris", iris_model(tmp_path / "v1"), SKLEARN)
    client.create_deployment("team", "iris", "iris@latest")
    client.wait_deployment("team", "iris", timeout=60)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"this is not a pickle")
    client.push("team/iris", broken, SKLEARN)

    def failed() -> bool:
        return client.get_deployment("team", "iris").revisions[-1].state == "failed"

    wait_for(failed, 60, "revision 2 to be marked failed", 0.1)
    info = client.get_deployment("team", "iris")
    reason = info.revisions[-1].reason or ""
    assert "Traceback" in reason and "model.joblib" in reason
    assert info.status.startswith("revision 2 (version 2) failed")
    assert "still serving revision 1 (100%)" in info.status
    assert served_version(serving) == "1"


def test_a_deployment_follows_its_alias(serving: Serving, tmp_path: Path) -> None:
    client = serving.client
    client.push("team/iris", iris_model(tmp_path / "v1"), SKLEARN, alias="production")
    client.push("team/iris", iris_model(tmp_path / "v2", max_iter=3), SKLEARN)
    client.create_deployment("team", "iris", "iris@production")
    # the gateway holds requests while the first revision starts (404 only until its routing
    # table lists the new deployment, a sync round later)
    wait_for(lambda: serving.infer("iris", ROWS).status_code == 200, 60, "the first answer", 0.05)
    assert served_version(serving) == "1"  # latest is 2, but the alias says 1
    client.set_alias("team/iris@2", "production")
    wait_for(lambda: served_version(serving) == "2", 30, "the alias move to deploy", 0.05)
