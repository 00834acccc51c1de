"""``make tour`` (``examples/registry_tour.py``) as a user runs it: in a folder of its own, beside
a demo, with its data in ``.modelyard-tour`` and not in the image search demo's home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_the_tour_keeps_its_data_apart_from_the_demo(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "registry_tour.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every byte matches" in done.stdout
    assert (tmp_path / ".modelyard-tour" / "modelyard.db").is_file()
    assert not (tmp_path / ".modelyard-demo").exists()
