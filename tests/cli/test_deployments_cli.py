"""Deployments through the CLI, against a real control plane whose replicas really start."""

from __future__ import annotations

import json
from pathlib import Path

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.errors import DeploymentFailed, InvalidInput, NotFound
from modelyard.realtime.queue import Trigger
from modelyard.testing import wait_for
from tests.cli.conftest import TERMINAL_80, Cli, fits
from tests.conftest import iris_model


def test_create_show_update_split_and_delete(cli: Cli, tmp_path: Path) -> None:
    cli("namespaces", "create", "team")
    cli("models", "push", str(iris_model(tmp_path / "v1")), "team/iris", "--runtime", "sklearn")
    # --model NS/NAME is taken when NS is the deployment's namespace
    out = cli("deployments", "create", "team/iris", "--model", "team/iris@latest", "--wait")
    assert "serving revision 1 (100%)" in out
    assert "/team/iris/v2/models/iris/infer" in out
    listed = cli("deployments", "list", "team")
    assert "iris@latest" in listed and "yes" in listed

    out = cli(
        "deployments", "update", "team/iris", "--max-replicas", "2", "--timeout", "5", "--wait"
    )
    assert "serving revision 2 (100%)" in out  # --wait returned once revision 2 served
    shown = json.loads(cli("deployments", "show", "team/iris", "--json"))
    assert shown["revisions"][1]["percent"] == 100

    def both_ready() -> bool:
        shown = json.loads(cli("deployments", "show", "team/iris", "--json"))
        return [r["state"] for r in shown["revisions"]] == ["retired", "ready"]

    wait_for(both_ready, 60, "revision 1 to retire", 0.2)
    shown = json.loads(cli("deployments", "show", "team/iris", "--json"))
    assert shown["spec"]["autoscaling"]["max_replicas"] == 2
    assert shown["spec"]["autoscaling"]["min_replicas"] == 1  # the rest of the block is kept

    # revision 1 is retired (no replica): --wait returns once it has a ready one again
    out = cli("deployments", "traffic", "team/iris", "1=10:old", "2=90", "--wait")
    assert "10% tags old" in out
    revision_1 = json.loads(cli("deployments", "show", "team/iris", "--json"))["revisions"][0]
    assert any(p["state"] == "ready" for p in revision_1["replicas"])
    assert (
        "revision 1 (10%)"
        in json.loads(cli("deployments", "show", "team/iris", "--json"))["status"]
    )
    out = cli("deployments", "strategy", "team/iris", "canary", "--min-requests", "5", "--wait")
    assert "rollout: canary 10,50,100%, steps of 30-900 s, 5 requests each" in out
    out = cli("deployments", "rollout", "team/iris", "--revision", "1")
    assert "rollout of revision 1 from 2: running, step 1/3 (10% of 10,50,100)" in out
    out = cli("deployments", "promote", "team/iris")
    assert "rollout of revision 1 from 2: promoted, step 3/3 (100% of 10,50,100)" in out
    admin = next(k for k in json.loads(cli("keys", "list", "--json")) if k["admin"])
    assert f"by {admin['name']}" in out and admin["id"] not in out
    history = cli("deployments", "history", "team/iris")
    promoted = next(line for line in history.splitlines() if " rollout.promoted " in line)
    assert promoted.split()[3] == admin["name"], history  # the "by" column
    assert admin["id"] not in history, history
    # the traffic change above, as the CLI takes it, no Python repr
    assert "traffic=r1=10 r2=90 (tag old on r1)" in history, history
    assert "[{" not in history and "'revision'" not in history, history
    for command, whole in [
        ("history", " rollout.promoted "),
        ("show", " iris-00001 "),
        ("rollouts", "rollout of revision 1 "),
    ]:
        on_terminal = cli.run("deployments", command, "team/iris", env=TERMINAL_80).stdout
        assert fits(on_terminal) and whole in on_terminal, on_terminal
    cli("deployments", "strategy", "team/iris", "replace")

    bad = cli.fail("deployments", "traffic", "team/iris", "1=10", "2=80")
    assert bad.exit_code == InvalidInput.exit_code
    assert bad.stderr == "error: traffic percents add up to 90: they must add up to 100\n"

    assert "deleted" in cli("deployments", "delete", "team/iris")
    missing = cli.fail("deployments", "show", "team/iris")
    assert missing.exit_code == NotFound.exit_code
    assert "does not exist" in missing.stderr


def test_a_missing_model_is_a_clear_error(cli: Cli) -> None:
    cli("namespaces", "create", "team")
    result = cli.fail("deployments", "create", "team/iris", "--model", "iris@latest")
    assert result.exit_code == NotFound.exit_code
    assert result.stderr == "error: model team/iris does not exist: push a version first\n"
    other = cli.fail("deployments", "create", "team/iris", "--model", "shop/iris@latest")
    assert other.exit_code == InvalidInput.exit_code
    assert other.stderr.startswith(
        "error: --model 'shop/iris@latest': a deployment in 'team' serves a model of 'team'"
    )


def test_a_spec_that_is_not_json_is_a_usage_error(cli: Cli) -> None:
    for spec in ("{bad", "[1]"):
        refused = cli.fail("deployments", "create", "team/iris", "--model", "iris", "--spec", spec)
        assert refused.exit_code == InvalidInput.exit_code, refused.stderr
        assert "give a JSON object, e.g." in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def test_a_deployment_that_fails_says_why_in_one_line(cli: Cli, tmp_path: Path) -> None:
    cli("namespaces", "create", "team")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(b"not a joblib file")
    cli("models", "push", str(folder), "team/broken", "--runtime", "sklearn")
    failed = cli.fail("deployments", "create", "team/broken", "--model", "broken", "--wait")
    assert failed.exit_code == DeploymentFailed.exit_code
    assert len(failed.stderr.splitlines()) == 1, failed.stderr
    assert failed.stderr.startswith(
        "error: team/broken: revision 1 (version 1) failed: replicas exited before getting "
        "ready (3 attempts, last exit code "
    ), failed.stderr
    # the error line the replica's traceback ends with, not the first exception of the chain
    assert "): modelyard.errors.InvalidInput: cannot load model.joblib with joblib (" in (
        failed.stderr
    )
    listed = cli("deployments", "list", "team")
    row = next(line for line in listed.splitlines() if line.startswith("broken "))
    assert "cannot load model.joblib" in row and "Traceback" not in listed
    shown = json.loads(cli("deployments", "show", "team/broken", "--json"))
    assert "Traceback" in shown["status"]  # the whole of it is there for who asks


def test_show_of_a_realtime_deployment_says_where_its_predictions_are(
    cli: Cli, admin: Client
) -> None:
    cli("namespaces", "create", "team")
    admin.realtime.create_stream("team", "clicks")
    admin.realtime.create(
        "team", "scorer", stream="clicks", function="tests.realtime.functions:score"
    )
    out = cli("deployments", "show", "team/scorer")
    assert "team/scorer -> no model:" in out
    assert "/v2/models/" not in out  # the gateway routes no requests to a realtime worker
    assert "tests.realtime.functions:score on stream clicks" in out
    assert "/team/predictions/scorer/ENTITY" in out


def test_a_realtime_worker_that_fails_says_why_in_one_line(cli: Cli, admin: Client) -> None:
    cli("namespaces", "create", "team")
    admin.realtime.create_stream("team", "clicks")
    admin.realtime.create("team", "scorer", stream="clicks", function="nomodule:score")
    wait_for(
        lambda: "failed" in admin.get_deployment("team", "scorer").status,
        timeout=60,
        what="the worker to fail",
    )
    listed = cli("realtime", "list", "team")
    row = next(line for line in listed.splitlines() if line.startswith("scorer "))
    assert "the function cannot be loaded from 'nomodule:score'" in row, listed
    assert "Traceback" not in listed


def test_dead_letters_say_when_there_may_be_more_than_shown(
    cli: Cli, admin: Client, server: BackgroundServer
) -> None:
    cli("namespaces", "create", "team")
    admin.realtime.create_stream("team", "clicks")
    admin.realtime.create("team", "scorer", stream="clicks", function="nomodule:score")
    queue = server.plane.realtime_stores.queue
    queue.enqueue(
        "team/scorer",
        [Trigger("team/scorer", f"u{i}", i, f"e{i}", 1.0, 0.0) for i in (1, 2, 3)],
        cursor=3,
    )
    for trigger in queue.claim("team/scorer", 10, 60.0, now=1.0):
        assert queue.fail(trigger, "Traceback ...\nValueError: boom", max_attempts=1, now=2.0)
    every = cli("realtime", "dead-letters", "team/scorer")
    assert every.count("ValueError: boom") == 3 and "there may be more" not in every
    first = cli("realtime", "dead-letters", "team/scorer", "--limit", "2")
    assert first.count("ValueError: boom") == 2
    assert "the first 2 dead letters: there may be more (--limit, up to 1000)" in first
