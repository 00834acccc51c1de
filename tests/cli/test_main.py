"""The entry point: usage errors, the help, the version, messages printed as they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard import __version__
from modelyard.cli.main import COMMANDS, app
from modelyard.testing import Platform, wait_for
from tests.cli.conftest import TERMINAL_80, Cli


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_usage_errors_are_one_line_with_exit_code_2() -> None:
    cli = Cli()
    for args, message in [
        (["models", "push"], "error: Missing argument 'source'."),
        (["models", "push", "--bogus"], "error: No such option: --bogus"),
        (["deployments", "traffic", "team/iris", "1=x"], "error: Invalid value: '1=x'"),
        (["nosuch"], "error: No such command 'nosuch'."),
    ]:
        result = cli.run(*args)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        assert result.stderr.startswith(message), result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
    # the real process, as a shell runs it
    proc = run("models", "push")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "error: Missing argument 'source'. (see 'python -m modelyard models push --help')\n"
    )


def test_modelyard_alone_prints_its_help_and_nothing_else() -> None:
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2  # a usage error, as typer and click make it
    assert "Usage: modelyard" in result.stdout and "deployments" in result.stdout
    assert result.stderr == ""
    proc = run()
    assert proc.returncode == 2 and "Usage:" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_command_loads_its_own_modules_and_the_help_lists_every_command() -> None:
    code = (
        "import os, sys\n"
        "from modelyard.cli.main import app\n"
        "sys.stdout = open(os.devnull, 'w')\n"
        "try:\n"
        "    app(['datasets', 'import-sql', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.__stdout__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(proc.stdout.split())
    assert {"modelyard.cli.sql", "modelyard.client"} <= loaded
    unused = {
        "modelyard.cli.deployments",
        "modelyard.cli.pipelines",
        "modelyard.cli.realtime",
        "modelyard.cli.slos",
        "modelyard.serving.records",
        "modelyard.pipelines.dsl",
        "modelyard.delivery.records",
    }
    assert not unused & loaded, sorted(unused & loaded)
    shown = CliRunner().invoke(app, ["--help"]).stdout
    listed = [line.split()[1] for line in shown.splitlines() if line.startswith("│ ")]
    assert set(COMMANDS) <= set(listed), listed


def test_version() -> None:
    result = Cli().run("--version")
    assert (result.exit_code, result.stdout) == (0, f"modelyard {__version__}\n")


def test_messages_keep_their_square_brackets(cli: Cli, tmp_path: Path) -> None:
    # The exact message the issue lost its "[postgres]" in, from a command that needs no server.
    result = Cli().run(
        "up",
        env={
            "MODELYARD_HOME": str(tmp_path / "home"),
            "MODELYARD_DATABASE_URL": "postgresql+pg8000://someone@127.0.0.1/db",
        },
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "error: postgresql+pg8000 needs its driver: pip install 'modelyard[postgres]'\n"
    )
    # data in tables and lines
    cli("namespaces", "create", "team", "--description", "the [bold]team[/]")
    (tmp_path / "m.bin").write_bytes(b"model")
    described = "needs [sklearn] :thumbs_up:"
    cli("models", "push", str(tmp_path / "m.bin"), "team/m", "--description", described)
    assert "the [bold]team[/]" in cli("namespaces", "list")
    assert described in cli("models", "list", "team")
    assert described in cli("models", "show", "team/m@1")
    assert described in cli.run("models", "list", "team", env=TERMINAL_80).stdout


@pytest.mark.slow
def test_up_on_other_ports_is_found_through_its_home(
    platforms: list[Platform], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    platform = Platform(home, f"sqlite:///{home / 'modelyard.db'}")
    platforms.append(platform)
    bare = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        ports = ["--api-port", str(platform.port), "--gateway-port", str(platform.gateway_port)]
        platform.process = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "up", "--home", str(home), *ports],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=bare,
        )
    url = f"http://127.0.0.1:{platform.port}"
    wait_for(lambda: (home / "url").exists(), 30, "modelyard up to record its URL")
    assert (home / "url").read_text() == url + "\n"

    # the CLI given only the same --home: no URL, no port, no key
    cli = Cli()
    clean = {k: None for k in os.environ if k.startswith("MODELYARD_")}
    created = cli.run("--home", str(home), "namespaces", "create", "team", env=clean)
    assert created.stdout == "created namespace team\n", created.output
    result = cli.run("--home", str(home), "config", "--json", env=clean)
    config = json.loads(result.stdout)
    assert config["url"] == {
        "value": url,
        "origin": f"file {home.resolve() / 'url'} (written by modelyard up)",
    }
    assert config["api_key"] == {
        "value": "**********",
        "origin": f"file {home.resolve() / 'admin.key'}",
    }
    assert (home / "admin.key").read_text().strip() not in result.output

    platform.interrupt()  # Ctrl-C: a clean stop
    assert not (home / "url").exists()
    printed = log.read_text()
    assert "POST /api/v1/namespaces 201" in printed  # the access log is on ...
    assert "/gateway/sync" not in printed  # ... without the gateway's long poll
