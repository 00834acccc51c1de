"""What the chart's hook Job relies on: ``modelyard migrate`` brings a database to the newest
schema with nothing but its URL, and a control plane told not to migrate refuses an older schema
(saying what to run) and starts on a migrated one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.errors import ConfigError
from modelyard.settings import Settings


def test_the_hook_migrates_and_the_control_plane_then_skips_it(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=database_url, migrate_on_start=False)
    with pytest.raises(ConfigError, match="modelyard migrate"):
        ControlPlane.build(settings)

    env = {
        **os.environ,
        "MODELYARD_HOME": str(tmp_path / "job"),  # the Job's emptyDir
        "MODELYARD_DATABASE_URL": database_url,
    }
    for _ in range(2):  # an upgrade with nothing new migrates nothing, and succeeds
        done = subprocess.run(
            [sys.executable, "-m", "modelyard", "migrate"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "up to date" in done.stdout

    plane = ControlPlane.build(settings)
    try:
        assert plane.namespaces.create("team").name == "team"
    finally:
        plane.close()
