"""``make demo-realtime`` as a user runs it, with small sizes: history sent, a training set by
replay, a model with its held-out AUC committed, the live stream scored, and ``--once`` exits."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.testing import free_port

pytestmark = pytest.mark.slow


def test_the_realtime_demo_runs_once(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelyard.apps.realtime_demo.demo",
            *("--home", str(tmp_path / "home"), "--users", "200", "--sessions", "1500"),
            *("--api-port", str(free_port()), "--gateway-port", str(free_port())),
            *("--rate", "100", "--seconds", "5", "--once"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    auc = re.search(r"AUC on held-out users: (0\.\d+)", done.stdout)
    assert auc is not None and float(auc.group(1)) > 0.5, done.stdout
    assert "committed shop/purchase@1" in done.stdout
    live = re.search(r"live: ([\d,]+) events, ([\d,]+) predictions", done.stdout)
    assert live is not None and int(live.group(2).replace(",", "")) > 0, done.stdout
