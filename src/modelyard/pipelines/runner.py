"""What runs inside a step's own process: ``python -m modelyard.pipelines.runner TASK.json``.

It loads the pipeline module from the source the spec carries (so the step runs the code that was
registered, not whatever the file says now), builds the artifacts, calls the function and writes
the result. It imports nothing heavy: the per-step cost is one interpreter start.
"""

from __future__ import annotations

import json
import linecache
import sys
import traceback
import types
from pathlib import Path
from typing import Any

from modelyard.pipelines.artifacts import ARTIFACT_TYPES, Artifact


def _artifact(record: dict[str, Any]) -> Artifact:
    cls = ARTIFACT_TYPES[record["type"]]
    return cls(record["path"], record.get("uri", ""), dict(record.get("metadata") or {}))


def load_module(name: str, source: str, code_root: str | None) -> types.ModuleType:
    if code_root and Path(code_root).is_dir() and code_root not in sys.path:
        sys.path.insert(0, code_root)
    module = types.ModuleType(name)
    module.__file__ = f"<modelyard pipeline module {name}>"
    # inspect.getsource() (which @step calls) reads the source back through linecache.
    linecache.cache[module.__file__] = (len(source), None, source.splitlines(True), module.__file__)
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def run(task: dict[str, Any]) -> dict[str, Any]:
    module = load_module(task["module"], task["module_source"], task.get("code_root"))
    step = getattr(module, task["function"])
    func = getattr(step, "func", step)
    kwargs: dict[str, Any] = dict(task["params"])
    outputs: dict[str, Artifact] = {}
    for name, record in task["inputs"].items():
        kwargs[name] = (
            [_artifact(r) for r in record] if isinstance(record, list) else _artifact(record)
        )
    for name, record in task["outputs"].items():
        outputs[name] = kwargs[name] = _artifact(record)
    result = func(**kwargs)
    return {"result": result, "metadata": {name: art.metadata for name, art in outputs.items()}}


def main(argv: list[str]) -> int:
    task_file = Path(argv[1])
    task = json.loads(task_file.read_text())
    try:
        outcome = run(task)
    except BaseException as exc:
        traceback.print_exc()
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        Path(task["result_path"]).write_text(json.dumps({"error": error}))
        sys.stdout.flush()
        return 1
    try:
        encoded = json.dumps(outcome)
    except TypeError as exc:
        print(f"the step's result is not JSON: {exc}", file=sys.stderr)
        Path(task["result_path"]).write_text(json.dumps({"error": f"result is not JSON: {exc}"}))
        return 1
    Path(task["result_path"]).write_text(encoded)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
