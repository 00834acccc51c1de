"""``make k8s-smoke``: it cannot run here (no container engine, no cluster), so what is checked is
that the target runs the script, that the script parses (and passes shellcheck where installed),
and that without the tools it needs it fails at once, naming them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "k8s-smoke.sh"


def test_the_make_target_runs_the_script() -> None:
    dry = subprocess.run(
        ["make", "-n", "k8s-smoke"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "deploy/k8s-smoke.sh" in dry.stdout


def test_the_script_parses_and_passes_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is not None:
        result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
    assert SCRIPT.stat().st_mode & 0o111  # make runs it directly


def test_without_a_container_engine_or_cluster_tool_it_fails_naming_them(
    tmp_path: Path,
) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, str(SCRIPT)], env={"PATH": str(tmp_path)}, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "PASS" not in result.stdout
    assert result.stderr.startswith("FAIL: k8s-smoke needs what this machine lacks")
    for tool in ("docker or podman", "kind or k3d", "kubectl"):
        assert tool in result.stderr
