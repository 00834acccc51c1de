"""Deployments through the CLI, against a real control plane whose replicas really start."""

from __future__ import annotations

import json
from pathlib import Path

from modelyard.errors import InvalidInput, NotFound
from tests.cli.conftest import Cli
from tests.conftest import iris_model, wait_for


def test_create_show_update_split_and_delete(cli: Cli, tmp_path: Path) -> None:
    cli("namespaces", "create", "team")
    cli("models", "push", str(iris_model(tmp_path / "v1")), "team/iris", "--runtime", "sklearn")
    out = cli("deployments", "create", "team/iris", "--model", "iris@latest", "--wait")
    assert "serving revision 1 (100%)" in out
    assert "/team/iris/v2/models/iris/infer" in out
    listed = cli("deployments", "list", "team")
    assert "iris@latest" in listed and "yes" in listed

    out = cli("deployments", "update", "team/iris", "--max-replicas", "2", "--timeout", "5")
    assert "iris-00002" in out

    def both_ready() -> bool:
        shown = json.loads(cli("deployments", "show", "team/iris", "--json"))
        return [r["state"] for r in shown["revisions"]] == ["retired", "ready"]

    wait_for(both_ready, 60, "revision 2 to take over", 0.2)
    shown = json.loads(cli("deployments", "show", "team/iris", "--json"))
    assert shown["spec"]["autoscaling"]["max_replicas"] == 2
    assert shown["spec"]["autoscaling"]["min_replicas"] == 1  # the rest of the block is kept

    out = cli("deployments", "traffic", "team/iris", "1=10:old", "2=90")
    assert "10% tags old" in out
    assert (
        "revision 1 (10%)"
        in json.loads(cli("deployments", "show", "team/iris", "--json"))["status"]
    )
    bad = cli.fail("deployments", "traffic", "team/iris", "1=10", "2=80")
    assert isinstance(bad.exception, InvalidInput)
    assert bad.exception.message == "traffic percents add up to 90: they must add up to 100"

    assert "deleted" in cli("deployments", "delete", "team/iris")
    missing = cli.fail("deployments", "show", "team/iris")
    assert isinstance(missing.exception, NotFound)
    assert "does not exist" in missing.exception.message


def test_a_missing_model_is_a_clear_error(cli: Cli) -> None:
    cli("namespaces", "create", "team")
    result = cli.fail("deployments", "create", "team/iris", "--model", "iris@latest")
    assert isinstance(result.exception, NotFound)
    assert result.exception.message == "model team/iris does not exist: push a version first"
