"""The CLI against a real control plane on a free port."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from modelyard.api.server import BackgroundServer
from modelyard.cli.main import app


class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str) -> str:
        result = self.runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return str(result.output)

    def fail(self, *args: str) -> Result:
        return self.runner.invoke(app, list(args))


@pytest.fixture
def cli(server: BackgroundServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("MODELYARD_URL", server.url)
    monkeypatch.setenv(
        "MODELYARD_API_KEY", server.plane.settings.admin_key_path.read_text().strip()
    )
    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path / "client-home"))
    return Cli()
