"""What the container of an exported KFP step runs.

kfp's lightweight Python components: a shell script pip-installs ``kfp`` (and the packages the
export names), writes the program to a file and runs it with ``kfp.dsl.executor_main``, which
calls the step's function. The program is the pipeline module's whole source (so helper
functions come along) behind stand-ins that map ``modelyard.pipelines.dsl`` and ``.artifacts``
onto ``kfp.dsl``, since the step's image does not have modelyard.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence

from modelyard.errors import InvalidInput
from modelyard.pipelines.spec import PipelineSpec

KFP_VERSION = "2.17.3"

INSTALL_SCRIPT = """
if ! [ -x "$(command -v pip)" ]; then
    python3 -m ensurepip || python3 -m ensurepip --user || apt-get install python3-pip
fi

PIP_DISABLE_PIP_VERSION_CHECK=1 {commands} && "$0" "$@"
"""
RUN_SCRIPT = """\
program_path=$(mktemp -d)

printf "%s" "$0" > "$program_path/ephemeral_component.py"
_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main \
                        --component_module_path \
                        "$program_path/ephemeral_component.py" \
                        "$@"
"""
# The user's module imports modelyard, which the step's image does not have: these stand-ins
# give it kfp's artifact types, and turn @step and @pipeline into plain functions.
SHIMS = """
import sys as _modelyard_sys
import types as _modelyard_types
import typing as _modelyard_typing

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

_modelyard_steps = []


def _modelyard_step(func=None, **options):
    def wrap(f):
        _modelyard_steps.append(f)
        return f

    return wrap(func) if func is not None else wrap


def _modelyard_pipeline(func=None, **options):
    return func if func is not None else (lambda f: f)


def _modelyard_pipeline_only(*args, **kwargs):
    raise RuntimeError("this belongs in a @pipeline function, which a step never runs")


def _modelyard_module(name, **attributes):
    module = _modelyard_types.ModuleType(name)
    module.__path__ = []
    module.__dict__.update(attributes)
    _modelyard_sys.modules[name] = module
    return module


_modelyard_artifact_names = dict(
    Artifact=Artifact, Dataset=Dataset, Input=Input, Metrics=Metrics, Model=Model, Output=Output
)
_modelyard_module(
    "modelyard.pipelines",
    artifacts=_modelyard_module(
        "modelyard.pipelines.artifacts",
        ARTIFACT_TYPES={cls.__name__: cls for cls in (Artifact, Dataset, Metrics, Model)},
        **_modelyard_artifact_names,
    ),
    dsl=_modelyard_module(
        "modelyard.pipelines.dsl",
        step=_modelyard_step,
        pipeline=_modelyard_pipeline,
        If=_modelyard_pipeline_only,
        ParallelFor=_modelyard_pipeline_only,
        Collected=_modelyard_pipeline_only,
        importer=_modelyard_pipeline_only,
        **_modelyard_artifact_names,
    ),
)
_modelyard_sys.modules["modelyard"] = _modelyard_types.ModuleType("modelyard")
_modelyard_sys.modules["modelyard"].__path__ = []
_modelyard_sys.modules["modelyard"].pipelines = _modelyard_sys.modules["modelyard.pipelines"]

"""
# kfp's executor reads annotations as objects: resolve the postponed ones (PEP 563).
EPILOGUE = """

for _modelyard_func in _modelyard_steps:
    _modelyard_hints = _modelyard_typing.get_type_hints(_modelyard_func, include_extras=True)
    if _modelyard_hints.get("return") is type(None):
        _modelyard_hints["return"] = None
    _modelyard_func.__annotations__ = _modelyard_hints
"""
URI_PROGRAM = """
import kfp
from kfp import dsl
from kfp.dsl import *
from typing import *

def registry_uri(kind: str, ref: str) -> str:
    body, _, version = ref.partition("@")
    return f"modelyard://{kind}s/{body}@{version or 'latest'}"

"""


def command(program: str, packages: Sequence[str]) -> list[str]:
    """The container command that installs ``packages`` (and kfp) and runs ``program``."""
    installs = []
    if packages:
        installs.append(pip_install(packages))
    if not any(p.startswith("kfp") for p in packages):
        typing_extensions = 'typing-extensions>=3.7.4,<5; python_version<"3.9"'
        installs.append(pip_install([f"kfp=={KFP_VERSION}", "--no-deps", typing_extensions]))
    install = INSTALL_SCRIPT.format(commands=" && ".join(installs))
    return ["sh", "-c", install, "sh", "-ec", RUN_SCRIPT, program]


def step_program(spec: PipelineSpec) -> str:
    """The module's source behind the stand-ins; ``from __future__`` must stay first."""
    try:
        tree = ast.parse(spec.module_source)
    except SyntaxError as exc:
        raise InvalidInput(f"module {spec.module!r} does not parse: {exc}") from exc
    lines = spec.module_source.splitlines(keepends=True)
    future: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            end = node.end_lineno or node.lineno
            future.extend(lines[node.lineno - 1 : end])
            lines[node.lineno - 1 : end] = [""] * (end - node.lineno + 1)
    return "\n" + "".join(future) + SHIMS + "".join(lines) + EPILOGUE


def pip_install(packages: Iterable[str]) -> str:
    quoted = " ".join("'" + p.replace("'", "'\"'\"'") + "'" for p in packages)
    return f"python3 -m pip install --quiet --no-warn-script-location {quoted}"
