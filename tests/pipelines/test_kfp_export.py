"""The Kubeflow export: the YAML's structure here, and kfp itself (in its own venv) loading it,
compiling it into another pipeline, parsing it as the PipelineSpec proto, and running it locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.errors import InvalidInput
from modelyard.pipelines.dsl import If, pipeline, step
from modelyard.pipelines.kfp import KFP_VERSION, to_kfp_yaml
from tests.conftest import unavailable
from tests.pipelines import kfp_flow

REPO = Path(__file__).resolve().parents[2]
KFP_VENV = REPO / ".venv-kfp"

# Runs in the kfp venv: argv[1] is a JSON job, {"check": [[yaml, arguments]], "run": [...]}.
KFP_SCRIPT = r"""
import json
import sys

import yaml
from google.protobuf import json_format
from kfp import compiler, components, dsl, local
from kfp.pipeline_spec import pipeline_spec_pb2

job = json.loads(sys.argv[1])
for path, arguments in job["check"]:
    loaded = components.load_component_from_file(path)

    @dsl.pipeline(name="outer")
    def outer():
        loaded(**arguments)

    compiler.Compiler().compile(outer, path + ".outer.yaml")
    with open(path) as handle:
        json_format.ParseDict(yaml.safe_load(handle), pipeline_spec_pb2.PipelineSpec())
    print("checked", path, flush=True)

path, arguments, root = job["run"]
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=root)
components.load_component_from_file(path)(**arguments)
print("ran", path, flush=True)
"""


def exported(pipeline_yaml: str) -> dict[str, Any]:
    document = yaml.safe_load(pipeline_yaml)
    assert isinstance(document, dict)
    return document


def dependencies(dag: dict[str, Any]) -> dict[str, list[str]]:
    return {name: task.get("dependentTasks", []) for name, task in dag["tasks"].items()}


def test_chain_exports_as_kfp_would_compile_it() -> None:
    text = to_kfp_yaml(kfp_flow.chain.compile())
    assert text.startswith("# PIPELINE DEFINITION\n# Name: chain\n")
    assert "Not exported" not in text
    spec = exported(text)
    assert spec["schemaVersion"] == "2.1.0"
    assert spec["sdkVersion"] == f"kfp-{KFP_VERSION}"
    assert dependencies(spec["root"]["dag"]) == {
        "make": [],
        "train": ["make"],
        "condition-1": ["train"],
        "condition-2": ["train"],
        "for-loop-3": [],
        "total": ["for-loop-3"],
    }
    assert sorted(spec["components"]) == [
        "comp-condition-1",
        "comp-condition-2",
        "comp-for-loop-3",
        "comp-make",
        "comp-report",
        "comp-total",
        "comp-train",
    ]
    assert sorted(spec["deploymentSpec"]["executors"]) == [
        "exec-make",
        "exec-report",
        "exec-total",
        "exec-train",
    ]
    root = spec["root"]["dag"]["tasks"]
    assert spec["root"]["inputDefinitions"]["parameters"]["sizes"] == {
        "defaultValue": [1.0, 2.0, 3.0],
        "isOptional": True,
        "parameterType": "LIST",
    }
    assert root["make"]["inputs"]["parameters"]["rows"] == {"componentInputParameter": "rows"}
    assert root["train"]["inputs"]["artifacts"]["data"] == {
        "taskOutputArtifact": {"outputArtifactKey": "out", "producerTask": "make"}
    }
    assert root["train"]["retryPolicy"] == {
        "backoffDuration": "0.5s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "300s",
        "maxRetryCount": 2,
    }
    assert root["train"]["cachingOptions"] == {"enableCache": True}
    assert root["total"]["cachingOptions"] == {}
    assert root["condition-1"]["triggerPolicy"] == {
        "condition": "inputs.parameter_values['pipelinechannel--train-Output'] > 0.05"
    }
    assert root["condition-2"]["inputs"]["parameters"] == {
        "pipelinechannel--ledger": {"componentInputParameter": "ledger"},
        "pipelinechannel--train-Output": {
            "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "train"}
        },
    }
    report = spec["components"]["comp-condition-1"]["dag"]["tasks"]["report"]
    assert report["inputs"]["parameters"]["accuracy"] == {
        "componentInputParameter": "pipelinechannel--train-Output"
    }
    assert root["for-loop-3"]["parameterIterator"] == {
        "itemInput": "pipelinechannel--sizes-loop-item",
        "items": {"inputParameter": "pipelinechannel--sizes"},
    }
    loop = spec["components"]["comp-for-loop-3"]
    assert loop["dag"]["tasks"]["make-2"]["retryPolicy"]["maxRetryCount"] == 1
    assert loop["dag"]["outputs"]["artifacts"] == {
        "pipelinechannel--make-2-out": {
            "artifactSelectors": [{"outputArtifactKey": "out", "producerSubtask": "make-2"}]
        }
    }
    assert loop["outputDefinitions"]["artifacts"]["pipelinechannel--make-2-out"]["isArtifactList"]
    assert root["total"]["inputs"]["artifacts"]["parts"] == {
        "taskOutputArtifact": {
            "outputArtifactKey": "pipelinechannel--make-2-out",
            "producerTask": "for-loop-3",
        }
    }
    container = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert container["image"] == "python:3.11"
    assert container["args"] == ["--executor_input", "{{$}}", "--function_to_execute", "train"]
    program = container["command"][-1]
    assert program.lstrip().startswith("from __future__ import annotations")
    assert "from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output" in program
    assert "def note(ledger: str, line: str)" in program  # helpers come with the module


def test_a_step_that_names_its_image_runs_in_it() -> None:
    spec = kfp_flow.chain.compile()
    own = "registry.example/team/train:1"
    spec.steps["train"] = spec.steps["train"].model_copy(update={"image": own})
    executors = exported(to_kfp_yaml(spec, image="python:3.12"))["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["image"] == own
    assert executors["exec-make"]["container"]["image"] == "python:3.12"


def test_registry_imports_become_importer_nodes() -> None:
    spec = exported(to_kfp_yaml(kfp_flow.from_registry.compile()))
    assert dependencies(spec["root"]["dag"]) == {
        "importer-uri": [],
        "importer": ["importer-uri"],
        "importer-2": [],
        "read": ["importer", "importer-2"],
    }
    root = spec["root"]["dag"]["tasks"]
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-importer-2"]["importer"] == {
        "artifactUri": {"constant": "modelyard://models/team/clf@3"},
        "typeSchema": {"schemaTitle": "system.Model", "schemaVersion": "0.0.1"},
    }
    # a reference known only at run time goes through a step that makes the URI of it
    assert executors["exec-importer"]["importer"]["artifactUri"] == {"runtimeParameter": "uri"}
    assert root["importer-uri"]["inputs"]["parameters"]["ref"] == {
        "componentInputParameter": "catalog"
    }
    assert root["read"]["inputs"]["artifacts"]["model"] == {
        "taskOutputArtifact": {"outputArtifactKey": "artifact", "producerTask": "importer-2"}
    }


@step(timeout_seconds=5)
def pick(options: list[int]) -> list[int]:
    return options


@pipeline
def compares_a_list(options: list[int] = [1]) -> None:  # noqa: B006
    picked = pick(options=options)
    with If(picked.output == [1]):
        pick(options=options)


@pipeline
def times_out(options: list[int] = [1]) -> None:  # noqa: B006
    pick(options=options).set_timeout(7)
    pick(options=options)


def test_what_kfp_cannot_say_is_refused_or_noted() -> None:
    with pytest.raises(InvalidInput, match="KFP conditions compare only"):
        to_kfp_yaml(compares_a_list.compile())
    header = to_kfp_yaml(times_out.compile()).split("\ncomponents:")[0]
    assert header.endswith(
        "# Not exported (KFP's pipeline IR has no place for them):\n"
        "#    pick: timeout of 7 s\n"
        "#    pick-2: timeout of 5 s"
    )


# kfp itself ---------------------------------------------------------------------------------
def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(python), "-m", "pip", "install", "--quiet", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def kfp_python() -> Path:
    """The kfp venv (kfp pins kubernetes and protobuf, so never the project's venv)."""
    python = KFP_VENV / "bin" / "python"
    if python.exists():
        probe = [str(python), "-c", "import kfp; print(kfp.__version__)"]
        if subprocess.run(probe, capture_output=True, text=True).stdout.strip() == KFP_VERSION:
            return python
    subprocess.run([sys.executable, "-m", "venv", str(KFP_VENV)], check=True)
    first = installed = _pip(python, f"kfp=={KFP_VERSION}")
    if installed.returncode != 0:
        # An index whose newest certifi is older than the one kfp 2.17.3 asks for cannot resolve
        # it: take the 2.17 line's dependencies from an earlier patch release, then 2.17.3 itself.
        installed = _pip(python, f"kfp>=2.17,<{KFP_VERSION}")
        if installed.returncode == 0:
            installed = _pip(python, "--no-deps", f"kfp=={KFP_VERSION}")
    if installed.returncode != 0:
        unavailable(
            f"could not pip install kfp=={KFP_VERSION} into {KFP_VENV} (is PyPI reachable?): "
            + first.stderr.strip()[-800:]
        )
    return python


@pytest.mark.slow
def test_kfp_loads_compiles_parses_and_runs_the_export(kfp_python: Path, tmp_path: Path) -> None:
    chain = tmp_path / "chain.yaml"
    chain.write_text(to_kfp_yaml(kfp_flow.chain.compile()))
    registry = tmp_path / "from_registry.yaml"
    registry.write_text(to_kfp_yaml(kfp_flow.from_registry.compile()))
    ledger = tmp_path / "ledger.txt"
    job = {
        "check": [[str(chain), {"ledger": str(ledger)}], [str(registry), {}]],
        "run": [str(chain), {"ledger": str(ledger)}, str(tmp_path / "kfp-root")],
    }
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        [str(kfp_python), "-c", KFP_SCRIPT, json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert f"checked {chain}" in done.stdout and f"checked {registry}" in done.stdout
    outer = exported((tmp_path / "chain.yaml.outer.yaml").read_text())
    assert "comp-for-loop-3" in outer["components"]
    # kfp's local runner ran every step from the exported YAML: the condition that holds, not the
    # one that does not, every iteration of the fan-out, and the fan-in over all of them
    assert sorted(ledger.read_text().splitlines()) == [
        "make 1",
        "make 10",
        "make 2",
        "make 3",
        "report good 0.1",
        "total 6 from 3",
        "train 10",
    ]
