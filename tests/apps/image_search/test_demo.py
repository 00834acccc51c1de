"""``make demo`` as a user runs it: twice in the same folder, the second run serving as the
first did (it once answered 504 after 60 s: its gateway held a routing table from the first)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow


def test_the_demo_runs_twice_in_one_home(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    for run in (1, 2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "modelyard.apps.image_search.demo",
                "--once",
                "--emoji",
                "10",
                "--home",
                str(home),
                "--api-port",
                str(free_port()),
                "--gateway-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        log = (
            (home / "platform.log").read_text()[-3000:] if (home / "platform.log").exists() else ""
        )
        assert done.returncode == 0, (
            f"run {run}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{log}"
        )
        assert "queries: augmented copies" in done.stdout, done.stdout
