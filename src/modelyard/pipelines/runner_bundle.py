"""The step runner, carried into an image that does not have modelyard, as Kubeflow's launcher is.

A step that names its own image runs in it, yet its runner (:mod:`modelyard.pipelines.runner`)
is the platform's: the step's Job gets an init container of the platform image that runs
``python -m modelyard.pipelines.runner_bundle DEST PROTOCOL``. It copies into ``DEST``, a volume
the step's container mounts too, the ``modelyard`` package and the installed distributions the
runner loads (pydantic, fsspec, the filesystem of the blob store's ``PROTOCOL``, and what they
import), and writes ``DEST/launch.py``. The step's container then runs ``python3
DEST/launch.py TASK`` with the image's own Python: modelyard comes first on ``sys.path``, the
image's packages next, the copied ones last, so the step's code gets the versions its image has.

What the image needs: CPython of the platform image's minor version (the copied packages hold
compiled extensions, such as pydantic-core's) on glibc Linux of the same architecture, as
``python3``; ``launch.py`` checks the version and fails the step with a message that says so.
Packages the image has and the runner uses (pydantic, fsspec) must be versions modelyard supports.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

LOADS = """
import sys
before = set(sys.modules)
import fsspec
import modelyard.pipelines.dsl, modelyard.pipelines.runner
fsspec.get_filesystem_class(sys.argv[1])  # the filesystem's package, if it has one
import json
print(json.dumps(sorted({name.split(".")[0] for name in set(sys.modules) - before})))
"""
"""Run by a fresh interpreter: the top-level modules the runner loads, and nothing that this
process (or the interpreter's startup) happened to load."""

LAUNCHER = """\
# Written by modelyard.pipelines.runner_bundle: runs the platform's step runner with this
# image's python, modelyard first on the path, the image's own packages before the copied ones.
import json, os, runpy, sys

HERE = os.path.dirname(os.path.abspath(__file__))
WANTED = tuple(%(version)r)
if sys.version_info[:2] != WANTED:
    want, have = "%%d.%%d" %% WANTED, "%%d.%%d" %% sys.version_info[:2]
    error = (
        "this step's image has python " + have + ", but the platform's step runner needs "
        "python " + want + " (the platform image's): use an image with python " + want
    )
    print(error, file=sys.stderr)
    with open(sys.argv[1]) as task:
        result_path = json.load(task).get("result_path", "result.json")
    with open(result_path, "w") as out:
        json.dump({"error": error}, out)
    sys.exit(1)
sys.path.insert(0, os.path.join(HERE, "modelyard"))
sys.path.append(os.path.join(HERE, "packages"))
runpy.run_module("modelyard.pipelines.runner", run_name="__main__", alter_sys=True)
"""


def needed(protocol: str) -> list[importlib.metadata.Distribution]:
    """The installed distributions whose modules the runner loads for a blob store of
    ``protocol`` (modelyard itself apart)."""
    found = subprocess.run(
        [sys.executable, "-c", LOADS, protocol], stdout=subprocess.PIPE, text=True, check=True
    )
    loaded = json.loads(found.stdout)
    owners = importlib.metadata.packages_distributions()
    names = sorted({dist for name in loaded for dist in owners.get(name, [])} - {"modelyard"})
    return [importlib.metadata.distribution(name) for name in names]


def bundle(dest: Path, protocol: str) -> None:
    """Copy the runner and what it needs into ``dest``, and write ``dest/launch.py``."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    source = Path(__file__).resolve().parents[1]  # the modelyard package
    shutil.copytree(source, dest / "modelyard" / "modelyard", ignore=skip, dirs_exist_ok=True)
    packages = dest / "packages"
    for dist in needed(protocol):
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # scripts outside site-packages, and bytecode of this python
            found = Path(str(dist.locate_file(file)))
            if found.is_file():
                target = packages / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(found, target)
    (dest / "launch.py").write_text(LAUNCHER % {"version": list(sys.version_info[:2])})


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m modelyard.pipelines.runner_bundle DEST PROTOCOL", file=sys.stderr)
        return 2
    bundle(Path(argv[1]), argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
