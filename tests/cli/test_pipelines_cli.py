"""Pipelines through the CLI and a real control plane (executor and step processes included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelyard.errors import InvalidInput
from tests.cli.conftest import Cli


@pytest.fixture
def cli(cli: Cli) -> Cli:
    cli("namespaces", "create", "team")
    return cli


def test_register_run_watch_and_read_logs(cli: Cli, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    out = cli("pipelines", "register", "tests.pipelines.flows:chain", "-n", "team")
    assert "registered pipeline team/chain" in out
    assert "1 version" in cli(
        "pipelines", "register", "tests.pipelines.flows:chain", "-n", "team"
    )  # same content: same version
    assert "make-2" in cli("pipelines", "show", "chain", "-n", "team")

    out = cli(
        "pipelines",
        "run",
        "chain",
        "-n",
        "team",
        "--param",
        f"ledger={ledger}",
        "--param",
        "rows=8",
        "--param",
        "sizes=[4, 5]",
        "--wait",
    )
    assert "succeeded" in out
    runs = json.loads(cli("runs", "list", "-n", "team", "--json"))
    assert [r["state"] for r in runs] == ["succeeded"]
    run_id = runs[0]["id"]
    detail = json.loads(cli("runs", "show", run_id, "-n", "team", "--json"))
    assert {s["node"]: s["outputs"].get("result") for s in detail["steps"]}["total"] == 9
    logs = cli("runs", "logs", run_id, "-n", "team")
    assert "[make] --- attempt 1 of make" in logs and "[total]" in logs
    assert "total" in cli("runs", "logs", run_id, "-n", "team", "--step", "total")


def test_failed_runs_can_be_retried(cli: Cli, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    cli("pipelines", "register", "tests.pipelines.flows:retrying", "-n", "team")
    cli(
        "pipelines",
        "run",
        "retrying",
        "-n",
        "team",
        "--param",
        f"ledger={ledger}",
        "--param",
        "fail_times=3",
        "--wait",
    )
    run = json.loads(cli("runs", "list", "-n", "team", "--json"))[0]
    assert run["state"] == "failed"
    cli("runs", "retry", run["id"], "-n", "team")  # the 4th attempt succeeds
    from modelyard.client import Client

    client = Client()
    assert client.wait_run("team", run["id"], timeout=60).state == "succeeded"


def test_schedules_from_the_cli(cli: Cli, tmp_path: Path) -> None:
    cli("pipelines", "register", "tests.pipelines.flows:chain", "-n", "team")
    out = cli(
        "schedules",
        "create",
        "nightly",
        "-n",
        "team",
        "--pipeline",
        "chain",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Europe/Berlin",
        "--param",
        f"ledger={tmp_path / 'l'}",
    )
    assert "created schedule nightly (cron), next run" in out
    listing = json.loads(cli("schedules", "list", "-n", "team", "--json"))
    assert listing[0]["next_fire"].endswith(("02:00:00Z", "01:00:00Z", "+00:00"))
    cli("schedules", "pause", "nightly", "-n", "team")
    assert json.loads(cli("schedules", "list", "-n", "team", "--json"))[0]["paused"]
    cli("schedules", "delete", "nightly", "-n", "team")
    assert json.loads(cli("schedules", "list", "-n", "team", "--json")) == []


def test_unknown_modules_and_targets_are_clear_errors(cli: Cli) -> None:
    for target, message in [
        ("no_such_module:x", "cannot import"),
        ("tests.pipelines.flows:make", "not a @pipeline"),
        ("tests.pipelines.flows", "MODULE:FUNCTION"),
    ]:
        result = cli.fail("pipelines", "register", target, "-n", "team")
        assert isinstance(result.exception, InvalidInput)
        assert message in str(result.exception)
