"""The CLI against a real control plane on a free port (CliRunner, and a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from modelyard.api.server import BackgroundServer
from modelyard.errors import Forbidden, InvalidInput, NotFound
from tests.cli.conftest import TERMINAL_80, Cli


def test_models_push_show_alias_pull_and_events(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    (src / "model.joblib").write_bytes(b"\x00" * 5000)
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
    cli("models", "push", str(src / "model.joblib"), "vision/clf")
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
    assert sorted(p.name for p in dest.iterdir()) == ["model.joblib"]

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
    assert result.exit_code == NotFound.exit_code
    assert result.stderr.startswith("error: namespace 'nowhere' does not exist")
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


def test_hints_point_the_right_way(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"\x01" * 3000)
    cli("namespaces", "create", "team")
    # on a terminal, so that a progress bar would show: the error comes alone, no bar first
    typo = cli.run("models", "push", str(tmp_path / "model.bin"), "tema/clf", env=TERMINAL_80)
    assert typo.exit_code == NotFound.exit_code
    assert typo.stderr == "error: namespace 'tema' does not exist: did you mean 'team'?\n"
    pushed = cli.run("models", "push", str(tmp_path / "model.bin"), "team/clf", env=TERMINAL_80)
    assert pushed.exit_code == 0 and "push team/clf" in pushed.stderr  # the bar, once accepted
    far = cli.fail("models", "list", "zzzz")
    assert "create it with 'modelyard namespaces create zzzz'" in far.stderr
    missing = cli.fail("models", "show", "team/clf@candidate")
    assert missing.stderr == (
        "error: model team/clf@candidate does not exist: list versions with "
        "'modelyard models show team/clf'\n"
    )
    token = cli("keys", "create", "bot", "--role", "team=viewer").strip().splitlines()[-1]
    refused = cli.fail("--api-key", token, "models", "list", "tema")
    assert refused.exit_code == Forbidden.exit_code
    assert refused.stderr.endswith("no viewer role in namespace 'tema': did you mean 'team'?\n")


def test_models_show_prints_values_not_reprs(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a\n1\n")
    (tmp_path / "model.bin").write_bytes(b"\x01" * 10)
    cli("namespaces", "create", "team")
    cli("datasets", "push", str(tmp_path / "data.csv"), "team/rows")
    cli(
        "models",
        "push",
        str(tmp_path / "model.bin"),
        "team/clf",
        "--metric",
        "acc=0.9",
        "--param",
        "depth=3",
        "--tag",
        "owner=ml",
        "--input",
        "dataset:team/rows@1",
        "--run",
        "abc123",
    )
    shown = cli("models", "show", "team/clf@1")
    for line in (
        "  metrics: acc=0.9",
        "  params: depth=3",
        "  tags: owner=ml",
        "  lineage: run abc123; read dataset team/rows@1",
    ):
        assert line + "\n" in shown, shown
    assert "{" not in shown and "'" not in shown and "by admin" in shown


def test_pushing_the_same_files_again_pushes_nothing(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x02" * 4000)
    (src / "model.py").write_text("def predict(inputs):\n    return inputs\n")
    cli("namespaces", "create", "team")
    assert "committed team/clf@1" in cli("models", "push", str(src), "team/clf")
    again = cli("models", "push", str(src), "team/clf", "--alias", "production")
    assert again == (
        "identical to team/clf@1 (same files, runtime and signature): nothing pushed; alias "
        "production -> "
        "version 1 (--force commits a new version anyway)\n"
    )
    listing = json.loads(cli("models", "list", "team", "--json"))
    assert listing[0]["latest_version"] == 1 and listing[0]["aliases"] == {"production": 1}
    events = cli("events", "tail", "--type", "model.version.*")
    assert events.count("model.version.committed") == 1
    # a change of runtime is a change; so is --force
    assert "committed team/clf@2" in cli(
        "models", "push", str(src), "team/clf", "--runtime", "python"
    )
    assert "committed team/clf@3" in cli(
        "models", "push", str(src), "team/clf", "--runtime", "python", "--force"
    )
    (src / "weights.bin").write_bytes(b"\x03" * 4000)
    assert "committed team/clf@4" in cli(
        "models", "push", str(src), "team/clf", "--runtime", "python"
    )
    # datasets too
    cli("datasets", "push", str(src), "team/rows")
    assert "nothing pushed" in cli("datasets", "push", str(src), "team/rows")


def test_push_refuses_what_could_never_serve(cli: Cli, tmp_path: Path) -> None:
    cli("namespaces", "create", "team")
    folder = tmp_path / "iris"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\x01" * 10)
    for runtime, message in [
        ("sklaern", "error: unknown runtime 'sklaern': did you mean 'sklearn'? (installed here: "),
        (
            "sklearn",
            "error: the sklearn runtime loads model.joblib or the one *.joblib or *.pkl file of "
            "the version's top folder; the files pushed are weights.bin\n",
        ),
    ]:
        refused = cli.fail("models", "push", str(folder), "team/iris", "--runtime", runtime)
        assert refused.exit_code == InvalidInput.exit_code
        assert refused.stderr.startswith(message), refused.stderr
    (folder / "model.joblib").write_bytes(b"")
    empty = cli.fail("models", "push", str(folder), "team/iris", "--runtime", "sklearn")
    assert empty.stderr == (
        "error: model.joblib is empty (0 bytes): the sklearn runtime cannot load it\n"
    )
    assert "models in team" in cli("models", "list", "team")  # nothing was created
    assert json.loads(cli("models", "list", "team", "--json")) == []
    pushed = cli("models", "push", str(folder), "team/iris", "--runtime", "custom", "--no-check")
    assert "committed team/iris@1" in pushed


def test_push_with_a_sample_stores_the_signature(cli: Cli, tmp_path: Path) -> None:
    """``models push ./iris team/iris --runtime sklearn --sample request.json``: the KServe iris
    request (FP32, one flat row) run through the runtime here; the version says what it takes."""
    from tests.conftest import iris_model

    folder = iris_model(tmp_path / "iris")
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": [4],
                        "datatype": "FP32",
                        "data": [6.8, 2.8, 4.8, 1.4],
                    }
                ]
            }
        )
    )
    cli("namespaces", "create", "team")
    args = ("models", "push", str(folder), "team/iris", "--runtime", "sklearn")
    out = cli(*args, "--sample", str(request))
    assert out.startswith(
        "signature: takes input-0 FP64 [-1, 4]\n"
        "  answers predict INT64 [-1]; predict_proba FP64 [-1, 3] (when asked)\n"
        "committed team/iris@1"
    ), out
    version = json.loads(cli("models", "show", "team/iris@1", "--json"))
    assert version["signature"] == {
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
        "default_outputs": ["predict"],
    }
    shown = cli("models", "show", "team/iris@1")
    assert "  takes: input-0 FP64 [-1, 4]\n" in shown, shown
    assert "(same files, runtime and signature): nothing pushed" in cli(
        *args, "--sample", str(request)
    )
    # the same input as rows (v1 instances) or as a .npy array gives the same signature
    import numpy as np

    rows = tmp_path / "rows.json"
    rows.write_text("[[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]]")
    array = tmp_path / "rows.npy"
    np.save(array, np.array([[6.8, 2.8, 4.8, 1.4]], dtype=np.float32))
    for other in (rows, array):
        assert "nothing pushed" in cli(*args, "--sample", str(other)), other
    # a sample the model refuses is refused before anything is pushed, with the replica's reason
    bad = tmp_path / "bad.json"
    bad.write_text("[[1.0, 2.0]]")
    refused = cli.fail(*args, "--sample", str(bad))
    assert refused.exit_code == InvalidInput.exit_code
    assert refused.stderr == (
        "error: input 'input-0' has shape [1, 2] but the model takes [any, 4]\n"
    ), refused.stderr
    no_runtime = cli.fail("models", "push", str(folder), "team/iris", "--sample", str(request))
    assert "--sample needs --runtime" in no_runtime.stderr
