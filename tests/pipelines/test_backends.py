"""The step backend seam: choosing one by name, and the local backend running real processes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.errors import ConfigError
from modelyard.pipelines import runner, runner_bundle
from modelyard.pipelines.backends import (
    StepExit,
    StepLaunch,
    load_step_backend,
    step_backend_names,
)
from modelyard.pipelines.backends.local import LocalStepBackend
from modelyard.pipelines.task import ArtifactRecord, StepResult, StepTask
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore, open_blob_store
from tests.pipelines import flows
from tests.pipelines.conftest import Runner

SOURCE = """
import os, time

def double(text, factor, out):
    with open(text.path) as f:
        content = f.read()
    with open(out.path, "w") as f:
        f.write(content * factor)
    out.metadata["chars"] = len(content) * factor
    print("doubled in", os.getcwd())
    return factor

def linger(out):
    print("lingering", flush=True)
    time.sleep(120)

def no_output(out):
    return None
"""


class NotABackend:
    pass


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return open_blob_store((tmp_path / "blobs").as_uri())


def task(blobs: BlobStore, function: str, **params: Any) -> StepTask:
    data = b"ab"
    digest, size = hashlib.sha256(data).hexdigest(), len(data)
    with tempfile.TemporaryDirectory() as staging:
        (Path(staging) / "text.txt").write_bytes(data)
        assert blobs.put_file(str(Path(staging) / "text.txt")) == (digest, size)
    record: ArtifactRecord = {
        "type": "Dataset",
        "kind": "file",
        "digest": digest,
        "size": size,
        "files": [{"path": "text.txt", "sha256": digest, "size": size}],
        "metadata": {},
        "uri": "modelyard://datasets/team/text@1",
    }
    inputs: dict[str, ArtifactRecord | list[ArtifactRecord]] = (
        {"text": record} if function == "double" else {}
    )
    return {
        "module": "steps",
        "module_source": SOURCE,
        "code_root": None,
        "function": function,
        "params": params,
        "inputs": inputs,
        "outputs": {"out": {"type": "Artifact", "uri": "modelyard://runs/r/n/out"}},
        "blobs": {"url": blobs.url, "options": {}},
    }


def test_an_unknown_step_backend_names_the_valid_ones(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert step_backend_names()[:2] == ["kubernetes", "local"]
    with pytest.raises(
        ConfigError, match="unknown step backend 'k8s': use one of kubernetes, local"
    ):
        load_step_backend("k8s", settings)
    with pytest.raises(ConfigError, match="no from_settings"):
        load_step_backend(f"{__name__}:NotABackend", settings)
    backend = load_step_backend(settings.step_backend, settings)
    assert isinstance(backend, LocalStepBackend) and backend.home == tmp_path / "runs"


def test_the_runner_copies_inputs_in_and_stores_outputs_from_its_own_folder(
    blobs: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps(task(blobs, "double", factor=3)))
    monkeypatch.chdir(folder)
    assert runner.main(["runner", str(folder / "task.json")]) == 0
    result = json.loads((folder / "result.json").read_text())
    assert result["result"] == 3 and result["metadata"] == {"out": {"chars": 6}}
    out = result["artifacts"]["out"]
    assert out["digest"] == hashlib.sha256(b"ababab").hexdigest()
    assert out["uri"] == "modelyard://runs/r/n/out" and out["metadata"] == {"chars": 6}
    assert blobs.has(out["digest"])


def test_a_missing_output_is_the_steps_error(
    blobs: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "task.json").write_text(json.dumps(task(blobs, "no_output")))
    monkeypatch.chdir(tmp_path)
    assert runner.main(["runner", str(tmp_path / "task.json")]) == 1
    error = json.loads((tmp_path / "result.json").read_text())["error"]
    assert error.startswith("the step did not write its output 'out'")


class Ended:
    """The backend's on_exit, as an event to wait on."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self) -> None:
        self.event.set()

    def wait(self, backend: LocalStepBackend, node: str, timeout: float = 30.0) -> StepExit:
        assert self.event.wait(timeout), f"{node} did not end within {timeout} s"
        self.event.clear()
        ended = backend.check("run-1", node)
        assert ended is not None
        return ended


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalStepBackend]:
    local = LocalStepBackend(tmp_path / "runs")
    yield local
    local.close()


def test_a_result_over_the_tasks_limit_goes_to_the_blob_store_and_is_checked_when_read(
    blobs: BlobStore, tmp_path: Path
) -> None:
    spec: StepTask = {**task(blobs, "double", factor=1), "result_limit": 200}
    path = tmp_path / "result.json"
    runner.write_result(path, {"result": 1}, blobs, spec)
    assert json.loads(path.read_text()) == {"result": 1}  # short: as it is
    long: StepResult = {"result": "x" * 5000, "metadata": {"out": {"rows": 3}}}
    runner.write_result(path, long, blobs, spec)
    assert len(path.read_bytes()) <= 200
    pointer = json.loads(path.read_text())
    assert runner.load_result(pointer, spec["blobs"]) == long
    assert runner.load_result({"result": 1}, spec["blobs"]) == {"result": 1}
    stored = Path(blobs.cas_key(pointer["stored"]["sha256"]))
    stored.write_text(json.dumps({"result": "y" * 5000}))  # changed behind our back
    error = runner.load_result(pointer, spec["blobs"])["error"]
    assert error.startswith("the step's result cannot be read back from the blob store")
    stored.unlink()
    assert "missing" in runner.load_result(pointer, spec["blobs"])["error"]


def test_the_runner_bundle_runs_a_step_with_a_python_that_has_no_packages(
    blobs: BlobStore, tmp_path: Path
) -> None:
    """What a step's own image gets (``runner_bundle``): ``python -S`` (no site-packages, so
    nothing of this environment) runs the step from the bundle alone; a python of another
    version fails the step with a message that says which one it needs."""
    bundle = tmp_path / "runner"
    runner_bundle.bundle(bundle, "file")
    work = tmp_path / "work"
    work.mkdir()
    (work / "task.json").write_text(json.dumps(task(blobs, "double", factor=2)))
    command = [sys.executable, "-S", str(bundle / "launch.py"), str(work / "task.json")]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads((work / "result.json").read_text())
    assert result["artifacts"]["out"]["digest"] == hashlib.sha256(b"abab").hexdigest()
    launcher = bundle / "launch.py"
    wanted = f"WANTED = tuple({list(sys.version_info[:2])})"
    launcher.write_text(launcher.read_text().replace(wanted, "WANTED = (3, 99)"))
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    error = json.loads((work / "result.json").read_text())["error"]
    assert error.startswith("this step's image has python 3.") and "use an image with python 3.99"


def test_the_local_backend_runs_an_attempt_in_a_fresh_folder_of_its_own(
    backend: LocalStepBackend, blobs: BlobStore
) -> None:
    ended = Ended()
    backend.on_exit = ended
    spec = task(blobs, "double", factor=2)
    backend.launch(StepLaunch("run-1", "n", 1, spec, {}))
    outcome = ended.wait(backend, "n")
    assert outcome.code == 0, backend.logs("run-1", "n")
    assert outcome.result["artifacts"]["out"]["digest"] == hashlib.sha256(b"abab").hexdigest()
    assert backend.check("run-1", "n") is None  # reported once
    log = backend.logs("run-1", "n")
    folder = backend.home / "run-1" / "n" / "attempt-1"
    assert log.startswith("--- attempt 1 of n\n") and f"doubled in {folder}" in log
    assert backend.logs("run-1", "never") == ""


def test_terminate_stops_an_attempt_and_force_kills_it(
    backend: LocalStepBackend, blobs: BlobStore
) -> None:
    ended = Ended()
    backend.on_exit = ended
    for node in ("polite", "forced"):
        backend.launch(StepLaunch("run-1", node, 1, task(blobs, "linger"), {}))
    for node, force, code in (("polite", False, -15), ("forced", True, -9)):
        deadline = time.monotonic() + 30
        while "lingering" not in backend.logs("run-1", node):  # the step runs its function
            assert not ended.event.is_set(), backend.logs("run-1", node)
            assert time.monotonic() < deadline, f"{node} never started its function"
            ended.event.wait(0.05)
        assert backend.check("run-1", node) is None
        backend.terminate("run-1", node, force=force)
        assert ended.wait(backend, node).code == code


class Elsewhere(LocalStepBackend):
    """Steps in folders the executor never looks at, as on another machine."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Elsewhere:
        return cls(settings.home.parent / "elsewhere")


def test_a_pipeline_runs_on_the_backend_the_settings_name(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        api_port=0,
        pipeline_parallelism=2,
        step_backend=f"{__name__}:Elsewhere",
    )
    plane = ControlPlane.build(settings)
    try:
        plane.namespaces.create("team")
        plane.start_controllers()
        run = Runner(plane, tmp_path).run(flows.chain, rows=10, sizes=[1, 2])
        assert run.state == "succeeded", run.reason
        assert (tmp_path / "elsewhere" / run.id / "train" / "attempt-1").is_dir()
        assert not (settings.home / "runs" / run.id).exists()
        assert plane.versions.get("model", "team", "clf", "candidate").lineage["run"] == run.id
    finally:
        plane.close()
