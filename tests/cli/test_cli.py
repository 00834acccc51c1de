"""The CLI against a real control plane on a free port (CliRunner, and a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from modelyard.api.server import BackgroundServer
from modelyard.errors import NotFound
from tests.cli.conftest import Cli


def test_models_push_show_alias_pull_and_events(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x00" * 5000)
    cli("namespaces", "create", "vision")
    out = cli(
        "models",
        "push",
        str(src),
        "vision/clf",
        "--runtime",
        "sklearn",
        "--metric",
        "acc=0.9",
        "--tag",
        "team=search",
        "--alias",
        "candidate",
    )
    assert "committed vision/clf@1" in out
    cli("models", "push", str(src / "weights.bin"), "vision/clf")
    listing = json.loads(cli("models", "list", "vision", "--json"))
    assert listing[0]["latest_version"] == 2 and listing[0]["aliases"] == {"candidate": 1}

    version = json.loads(cli("models", "show", "vision/clf@candidate", "--json"))
    assert (version["number"], version["metrics"], version["tags"]) == (
        1,
        {"acc": 0.9},
        {"team": "search"},
    )
    assert "production -> version 2" in cli("models", "alias", "vision/clf@2", "production")
    assert "2" in cli("models", "alias", "vision/clf", "production", "--history")

    dest = tmp_path / "out"
    cli("models", "pull", "vision/clf@production", "--dest", str(dest))
    assert sorted(p.name for p in dest.iterdir()) == ["weights.bin"]

    tail = cli("events", "tail", "--type", "model.*")
    assert "model.version.committed" in tail and "model.alias.moved" in tail


def test_datasets_keys_and_config(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    cli("namespaces", "create", "shop")
    assert "committed shop/catalog@1" in cli(
        "datasets", "push", str(tmp_path / "data.csv"), "shop/catalog"
    )
    assert "catalog" in cli("datasets", "list", "shop")
    token = cli("keys", "create", "ci-bot", "--role", "shop=editor").strip().splitlines()[-1]
    assert token.startswith("my_")
    keys = json.loads(cli("keys", "list", "--json"))
    bot = next(k for k in keys if k["name"] == "ci-bot")
    assert bot["roles"] == {"shop": "editor"}
    assert "revoked" in cli("keys", "revoke", bot["id"])
    config = json.loads(cli("config", "--json"))
    assert config["url"]["origin"] == "env MODELYARD_URL"
    assert config["api_key"]["value"] == "**********"


def test_errors_are_one_line_with_an_exit_code(
    cli: Cli, server: BackgroundServer, tmp_path: Path
) -> None:
    result = cli.fail("models", "show", "nowhere/x@1")
    assert isinstance(result.exception, NotFound)
    env = {
        **os.environ,
        "MODELYARD_URL": server.url,
        "MODELYARD_HOME": str(tmp_path),
        "MODELYARD_API_KEY": server.plane.settings.admin_key_path.read_text().strip(),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "modelyard", "models", "show", "nowhere/x@1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == NotFound.exit_code
    assert proc.stderr.startswith("error: namespace 'nowhere' does not exist")
    proc = subprocess.run(
        [sys.executable, "-m", "modelyard", "--url", "http://127.0.0.1:9", "namespaces", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 7 and "modelyard up" in proc.stderr
