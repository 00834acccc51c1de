"""Pipelines through the CLI and a real control plane (executor and step processes included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelyard.api.server import BackgroundServer
from modelyard.errors import InvalidInput, NotFound, RunFailed
from modelyard.store.schema import RunRow
from tests.cli.conftest import TERMINAL_80, Cli, fits


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


def test_a_failed_run_waited_for_exits_non_zero_and_is_retried_by_prefix(
    cli: Cli, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    cli("pipelines", "register", "tests.pipelines.flows:retrying", "-n", "team")
    failed = cli.fail(
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
    assert failed.exit_code == RunFailed.exit_code
    run = json.loads(cli("runs", "list", "-n", "team", "--json"))[0]
    assert run["state"] == "failed"
    assert failed.stderr.startswith(
        f"error: run {run['id']} of retrying failed: step flaky failed (logs: "
    )
    assert "flaky  3        failed" in failed.stdout  # the steps table came first
    listed = cli("runs", "list", "-n", "team")
    assert run["id"] in listed  # whole, not truncated
    on_terminal = cli.run("runs", "list", "-n", "team", env=TERMINAL_80).stdout
    assert run["id"] in on_terminal and fits(on_terminal), on_terminal
    cli("runs", "retry", run["id"][:6], "-n", "team")  # a unique prefix; the 4th attempt succeeds
    from modelyard.client import Client

    with Client() as client:
        assert client.wait_run("team", run["id"], timeout=60).state == "succeeded"
    assert cli("runs", "show", run["id"][:8], "-n", "team").startswith(f"run {run['id']} ")


def test_logs_are_whole_a_closed_pipe_is_no_error_and_cached_runs_say_so(
    cli: Cli, server: BackgroundServer, tmp_path: Path
) -> None:
    cli("pipelines", "register", "tests.cli.flows:noisy", "-n", "team")
    cli("pipelines", "run", "noisy", "-n", "team", "--wait")
    run_id = json.loads(cli("runs", "list", "-n", "team", "--json"))[0]["id"]
    logs = cli.run("runs", "logs", run_id[:8], "-n", "team").stdout.splitlines()
    assert logs[2] == "[chatty] line     1 " + "x" * 120  # one line, not wrapped at 80 columns
    assert logs[-1] == "[chatty] line  1999 " + "x" * 120

    # modelyard runs logs RUN -n team | head -1
    with subprocess.Popen(
        [sys.executable, "-m", "modelyard", "runs", "logs", run_id, "-n", "team"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # what head does after its lines
        errors = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 141, errors  # as a process that SIGPIPE stopped
    assert first.startswith(b"[chatty] ") and errors == ""

    out = cli("pipelines", "run", "noisy", "-n", "team", "--wait")  # same inputs: all cached
    assert "every step (1) came from the cache: nothing ran again" in out
    cached = json.loads(cli("runs", "list", "-n", "team", "--json"))[0]["id"]
    result = cli.run("runs", "logs", cached, "-n", "team")
    assert result.exit_code == 0 and result.stdout == ""
    assert "every step came from the cache, so none ran" in result.stderr

    # a prefix of two runs is refused, naming them: a twin of the run whose id starts alike
    twin = run_id[:6] + ("0" if run_id[6] != "0" else "1") * 26
    with server.plane.db.write() as session:
        row = session.get(RunRow, run_id)
        columns = sa.inspect(RunRow).mapper.column_attrs
        session.add(RunRow(**{**{c.key: getattr(row, c.key) for c in columns}, "id": twin}))
    ambiguous = cli.fail("runs", "show", run_id[:6], "-n", "team")
    assert ambiguous.exit_code == InvalidInput.exit_code
    assert ambiguous.stderr.startswith(
        f"error: run '{run_id[:6]}' is the start of several runs in 'team' ("
    )
    assert run_id in ambiguous.stderr and twin in ambiguous.stderr
    assert cli("runs", "show", run_id[:7], "-n", "team").startswith(f"run {run_id} ")
    unknown = "ffff" if not run_id.startswith("ffff") else "eeee"
    assert cli.fail("runs", "show", unknown, "-n", "team").exit_code == NotFound.exit_code


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


def test_bad_schedule_options_name_the_option(cli: Cli) -> None:
    cli("pipelines", "register", "tests.pipelines.flows:chain", "-n", "team")
    base = ("schedules", "create", "s", "-n", "team", "--pipeline", "chain")
    trigger = ("--target", "team/data", "--version-param", "ledger")
    for args, said in [
        (("--on", "dataset.version.comitted", *trigger), "--on 'dataset.version.comitted': "),
        (("--every", "-5"), "--every -5.0: Input should be greater than 0"),
        (("--cron", "0 * * * *", "--overlap", "queue"), "--overlap 'queue': "),
        (("--cron", "0 * * * *", "--max-concurrency", "0"), "--max-concurrency 0: "),
    ]:
        result = cli.fail(*base, *args)
        assert result.exit_code == InvalidInput.exit_code
        assert said in result.output, result.output
    assert json.loads(cli("schedules", "list", "-n", "team", "--json")) == []


def test_a_trigger_on_a_name_without_versions_is_made_with_a_note(cli: Cli, tmp_path: Path) -> None:
    """Allowed (a trigger made before the first push), but a typo would never fire: said."""
    cli("pipelines", "register", "tests.pipelines.flows:chain", "-n", "team")
    (tmp_path / "rows.csv").write_text("a\n1\n")
    cli("datasets", "push", str(tmp_path / "rows.csv"), "team/data")
    base = ("schedules", "create", "-n", "team", "--pipeline", "chain", "--version-param", "ledger")
    typo = cli(*base, "t1", "--on", "dataset.version.committed", "--target", "team/dat")
    assert "no dataset team/dat has a version yet" in typo
    assert "'modelyard datasets list team'" in typo
    wrong_kind = cli(*base, "t2", "--on", "model.version.committed", "--target", "team/data")
    assert "no model team/data has a version yet" in wrong_kind
    right = cli(*base, "t3", "--on", "dataset.version.committed", "--target", "team/data")
    assert "created schedule t3" in right and "has a version yet" not in right
    listed = json.loads(cli("schedules", "list", "-n", "team", "--json"))
    assert sorted(s["name"] for s in listed) == ["t1", "t2", "t3"]


def test_unknown_modules_and_targets_are_clear_errors(cli: Cli) -> None:
    for target, message in [
        ("no_such_module:x", "cannot import"),
        ("tests.pipelines.flows:make", "not a @pipeline"),
        ("tests.pipelines.flows", "MODULE:FUNCTION"),
    ]:
        result = cli.fail("pipelines", "register", target, "-n", "team")
        assert result.exit_code == InvalidInput.exit_code
        assert message in result.stderr


def test_a_module_that_fails_as_it_imports_is_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's pipeline file with a mistake in it: one line saying where, not a traceback; and
    the public names the README uses import from ``modelyard.pipelines``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good_flows.py").write_text(
        "from modelyard.pipelines import pipeline, step\n\n"
        "@step\ndef hello() -> int:\n    return 1\n\n"
        "@pipeline(name='hello')\ndef hello_flow() -> None:\n    hello()\n"
    )
    (tmp_path / "broken_flows.py").write_text("import good_flows\nfrom nowhere_ok import x\n")
    (tmp_path / "raising_flows.py").write_text("x = 1\nraise ValueError('oops [here]')\n")
    assert "registered pipeline team/hello" in cli(
        "pipelines", "register", "good_flows:hello_flow", "-n", "team"
    )
    raised = cli.fail("pipelines", "register", "raising_flows:nothing", "-n", "team")
    assert raised.exit_code == InvalidInput.exit_code
    assert raised.stderr.count("\n") == 1, raised.stderr
    assert "raising_flows.py:2: ValueError: oops [here]" in raised.stderr, raised.stderr
    missing = cli.fail("pipelines", "register", "broken_flows:nothing", "-n", "team")
    assert "cannot import 'broken_flows'" in missing.stderr and "nowhere_ok" in missing.stderr
