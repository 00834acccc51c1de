"""What runs inside a step's own process.

The executor forks each step from a fork server that has this module and the DSL imported already
(:func:`run_forked`), so a step costs a fork, not an interpreter start and a pydantic import.
``python -m modelyard.pipelines.runner TASK.json`` does the same in a fresh interpreter.
Its one input is a portable task spec (:class:`modelyard.pipelines.task.StepTask`), and the
current directory is its working folder: it copies the inputs from the blob store into
``inputs/``, loads the pipeline module from the source the spec carries (so the step runs the code
that was registered, not whatever the file says now), calls the function, stores what it wrote in
``outputs/`` into the blob store and writes the result, output records included, to
``result.json`` (or the spec's ``result_path``; over the spec's ``result_limit``, the result
goes to the blob store and ``result.json`` says where: `load_result` reads it back). Nothing
else of the control plane's machine is read, so a step runs the same on another machine that
reaches the blob store.
"""

from __future__ import annotations

import hashlib
import json
import linecache
import os
import sys
import traceback
import types
from pathlib import Path
from typing import Any

from modelyard.errors import ModelyardError, StoreError
from modelyard.pipelines import outputs as stored
from modelyard.pipelines.artifacts import ARTIFACT_TYPES, Artifact
from modelyard.pipelines.task import ArtifactRecord, BlobLocation, StepResult, StepTask
from modelyard.plugins import import_target
from modelyard.serving.logs import log_to
from modelyard.store.blobs import BlobStore, open_blob_store

SCRIPT_MODULE = "__modelyard_pipeline__"


def _artifact(type: str, path: Path, uri: str, metadata: dict[str, Any]) -> Artifact:
    return ARTIFACT_TYPES[type](str(path), uri, dict(metadata))


def _input(blobs: BlobStore, record: ArtifactRecord, dest: Path) -> Artifact:
    handed = stored.materialize(blobs, dict(record), dest)
    return _artifact(handed["type"], dest, handed["uri"], handed["metadata"])


def load_module(name: str, source: str, code_root: str | None) -> types.ModuleType:
    if code_root and Path(code_root).is_dir() and code_root not in sys.path:
        sys.path.insert(0, code_root)
    if name == "__main__":
        # A pipeline defined in a script: its main block must not run again inside every step
        # (the rule multiprocessing has too).
        name = SCRIPT_MODULE
    module = types.ModuleType(name)
    module.__file__ = f"<modelyard pipeline module {name}>"
    # inspect.getsource() (which @step calls) reads the source back through linecache.
    linecache.cache[module.__file__] = (len(source), None, source.splitlines(True), module.__file__)
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def run(task: StepTask, blobs: BlobStore, folder: Path) -> StepResult:
    """Copy the inputs into ``folder``, call the step; the result and each output's metadata
    (the outputs themselves are still in ``folder/outputs``: see :func:`store_outputs`)."""
    kwargs: dict[str, Any] = dict(task["params"])
    for name, record in task["inputs"].items():
        where = folder / "inputs" / name
        kwargs[name] = (
            [_input(blobs, r, where / str(i)) for i, r in enumerate(record)]
            if isinstance(record, list)
            else _input(blobs, record, where)
        )
    (folder / "outputs").mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Artifact] = {}
    for name, slot in task["outputs"].items():
        path = folder / "outputs" / name
        outputs[name] = kwargs[name] = _artifact(slot["type"], path, slot["uri"], {})
    if ":" in task["function"]:
        # A step of modelyard's own (``sql_import``): its code is the installed package's.
        step = import_target(task["function"], "the step")
    else:
        module = load_module(task["module"], task["module_source"], task.get("code_root"))
        step = getattr(module, task["function"])
    func = getattr(step, "func", step)
    result = func(**kwargs)
    return {"result": result, "metadata": {name: art.metadata for name, art in outputs.items()}}


def store_outputs(
    blobs: BlobStore, folder: Path, task: StepTask, metadata: dict[str, dict[str, Any]]
) -> dict[str, ArtifactRecord]:
    """Move every output from ``folder/outputs`` into the blob store; their records. A Metrics
    output the step did not write is its metadata as JSON; any other missing one is an error."""
    records: dict[str, ArtifactRecord] = {}
    for name, slot in task["outputs"].items():
        path = folder / "outputs" / name
        if slot["type"] == "Metrics" and not path.exists():
            path.write_text(json.dumps(metadata.get(name, {})))
        record = stored.store_output(blobs, path, slot["type"], metadata.get(name, {}), slot["uri"])
        records[name] = record  # type: ignore[assignment]
    return records


def main(argv: list[str]) -> int:
    """Run the task spec at ``argv[1]`` in the current directory; the exit code of the step."""
    task: StepTask = json.loads(Path(argv[1]).read_text())
    folder = Path.cwd()
    blobs: BlobStore | None = None

    def done(result: StepResult, code: int) -> int:
        write_result(folder / task.get("result_path", "result.json"), result, blobs, task)
        return code

    try:
        blobs = open_blob_store(task["blobs"]["url"], task["blobs"]["options"])
        outcome = run(task, blobs, folder)
    except BaseException as exc:
        traceback.print_exc()
        return done({"error": "".join(traceback.format_exception_only(type(exc), exc)).strip()}, 1)
    try:
        json.dumps(outcome)
    except TypeError as exc:
        print(f"the step's result is not JSON: {exc}", file=sys.stderr)
        return done({"error": f"result is not JSON: {exc}"}, 1)
    try:
        outcome["artifacts"] = store_outputs(blobs, folder, task, outcome.get("metadata", {}))
    except ModelyardError as exc:
        print(exc.message, file=sys.stderr)
        return done({"error": exc.message}, 1)
    return done(outcome, 0)


def write_result(path: Path, result: StepResult, blobs: BlobStore | None, task: StepTask) -> None:
    """Write ``result`` to ``path``; one longer than the task's ``result_limit`` goes to the blob
    store, and ``path`` gets where (its :class:`StoredResult`)."""
    data = json.dumps(result).encode()
    limit = task.get("result_limit")
    if limit is None or len(data) <= limit:
        path.write_bytes(data)
        return
    full = path.with_name(f".{path.name}.full")
    try:
        if blobs is None:
            raise StoreError("the blob store could not be opened")
        full.write_bytes(data)
        digest, size = blobs.put_file(str(full))
        data = json.dumps({"stored": {"sha256": digest, "size": size}}).encode()
    except (OSError, ModelyardError) as exc:
        why = f"the step's result ({len(data)} bytes) could not be stored: {exc}"
        error = str(result.get("error", ""))
        # escaped, a character takes 6 bytes at most
        data = json.dumps({"error": f"{why}; {error}"[: limit // 8]}).encode()
    finally:
        full.unlink(missing_ok=True)
    path.write_bytes(data)


def load_result(result: dict[str, Any], location: BlobLocation) -> dict[str, Any]:
    """``result`` as the runner wrote it, read back from the blob store at ``location`` when
    it went there (`write_result`), its size and digest checked; an ``error`` when it cannot."""
    pointer = result.get("stored")
    if not isinstance(pointer, dict):
        return result
    try:
        digest, size = str(pointer["sha256"]), int(pointer["size"])
        with open_blob_store(location["url"], location["options"]).open(digest) as handle:
            data = handle.read(size + 1)
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"the stored result is not the {size} bytes of sha256 {digest}")
        loaded = json.loads(data)
        if not isinstance(loaded, dict):
            raise ValueError("the stored result is not a JSON object")
    except (KeyError, ValueError, OSError, ModelyardError) as exc:
        return {"error": f"the step's result cannot be read back from the blob store: {exc}"}
    return loaded


def die_with(pid: int) -> None:
    """Kill this process group when process ``pid`` (the control plane) exits, even by kill -9.

    The fork server is this process's parent and outlives the control plane while steps run, so
    PR_SET_PDEATHSIG cannot tell; a pidfd of the control plane becomes readable when it exits.
    """
    import select
    import signal
    import threading

    try:
        watched = os.pidfd_open(pid)
    except ProcessLookupError:
        os.killpg(0, signal.SIGKILL)
        return

    def watch() -> None:
        select.select([watched], [], [])
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-control-plane", daemon=True).start()


def run_forked(
    task_file: str,
    log_path: str,
    workdir: str,
    env: dict[str, str],
    memory_bytes: int | None,
    control_plane: int,
) -> None:
    """The body of a forked step process: its own process group, its log as stdout and stderr,
    death with the control plane, then the step; exits with the step's code."""
    import resource

    os.setpgid(0, 0)
    die_with(control_plane)
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    log_to(log_path)
    os.chdir(workdir)
    os.environ.update(env)
    code = 1
    try:
        code = main(["runner", task_file])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
