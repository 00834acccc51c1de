"""The CLI against a real control plane on a free port.

``Cli`` invokes the command tree through its own ``main`` (what the ``modelyard`` script runs),
so a test sees what a user sees: the error line on stderr and the exit code, never an exception.
CliRunner's output is no terminal: what it captures is the plain output of a pipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from modelyard.api.server import BackgroundServer
from modelyard.cli.main import app

# What a terminal 80 columns wide gets (rich reads these; NO_COLOR keeps escapes out).
TERMINAL_80 = {"TTY_COMPATIBLE": "1", "COLUMNS": "80", "NO_COLOR": "1"}


def fits(text: str, width: int = 80) -> bool:
    return all(len(line.rstrip()) <= width for line in text.splitlines())


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str) -> str:
        """Run a command that must succeed; its stdout and stderr together."""
        result = self.run(*args)
        assert result.exit_code == 0, result.output
        return str(result.output)

    def run(self, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
        return self.runner.invoke(app, list(args), env=env, catch_exceptions=False)

    def fail(self, *args: str) -> Result:
        """Run a command that must fail: one line on stderr, a non-zero exit code."""
        result = self.run(*args)
        assert result.exit_code != 0, result.output
        assert "Traceback" not in result.output, result.output
        return result


@pytest.fixture
def cli(server: BackgroundServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("MODELYARD_URL", server.url)
    monkeypatch.setenv(
        "MODELYARD_API_KEY", server.plane.settings.admin_key_path.read_text().strip()
    )
    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path / "client-home"))
    return Cli()
