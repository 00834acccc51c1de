"""Every code block of README.md runs as written.

The conventions the README follows:

- A ```sh (or ```bash) block runs with ``bash -euo pipefail``, a ```python block with ``python``,
  each in a process of its own, in the order they come, in one working folder: a block may use
  what an earlier one made (a file, a namespace, a version), as a reader going down the page does.
- They run against a real ``modelyard up`` that the test starts on free ports with a fresh home:
  ``HOME`` is a temporary folder, so ``~/.modelyard`` is that platform's home and the CLI and the
  SDK find it there (its URL and ``admin.key``), as they do for a reader; ``MODELYARD_GATEWAY_PORT``
  tells the blocks where its gateway listens. This interpreter's ``bin`` comes first on ``PATH``.
- ``<!-- file: NAME -->`` right before a block: the block is a file the prose asks the reader to
  save (``my_pipelines.py``, ``request.json``); it is written into the working folder, not run.
- ``<!-- not-run: REASON -->`` right before a block: it is not run, for the reason given. Such
  exceptions stay few (``MAX_NOT_RUN``): installing packages, ``modelyard up`` in the foreground,
  ``make demo`` (which has its own test).
- A ```json block without a file marker is data shown to the reader: it must parse. A ```text
  block is a diagram or a listing. Every fenced block names one of these languages.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelyard.testing import Platform

README = Path(__file__).resolve().parent.parent / "README.md"
RUN = {"sh": "bash", "bash": "bash", "python": "python"}
LANGUAGES = {*RUN, "json", "text"}
MAX_NOT_RUN = 4
BLOCK_TIMEOUT_S = 300
_MARKER = re.compile(r"<!--\s*(not-run|file):\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        language = lines[i][3:].strip()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"README.md:{i + 1}: a fenced block is never closed"
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.fullmatch(previous.strip())
        kind, value = marker.groups() if marker else (None, None)
        found.append(
            Block(
                line=i + 1,
                language=language,
                code="\n".join(lines[i + 1 : end]) + "\n",
                not_run=value if kind == "not-run" else None,
                file=value if kind == "file" else None,
            )
        )
        i = end + 1
    return found


def test_the_readme_blocks_follow_the_conventions() -> None:
    found = blocks(README.read_text())
    assert found
    for block in found:
        assert block.language in LANGUAGES, f"{block}: name one of {sorted(LANGUAGES)}"
        if block.not_run is not None:
            assert block.not_run, f"{block}: say why it does not run"
        if block.language == "json":
            json.loads(block.code)
        if block.language == "python":
            compile(block.code, str(block), "exec")
        if RUN.get(block.language) == "bash":
            checked = subprocess.run(
                ["bash", "-n"], input=block.code, capture_output=True, text=True
            )
            assert checked.returncode == 0, f"{block}: {checked.stderr}"
    not_run = [block for block in found if block.not_run is not None]
    assert len(not_run) <= MAX_NOT_RUN, [str(b) for b in not_run]
    files = [block.file for block in found if block.file]
    assert len(files) == len(set(files)), files


@pytest.mark.slow
def test_every_readme_block_runs_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    platform = Platform(home / ".modelyard", f"sqlite:///{home / '.modelyard' / 'modelyard.db'}")
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    platform.env = {
        **clean,
        **{k: v for k, v in platform.env.items() if k.startswith("MODELYARD_")},
    }
    env = {
        **clean,
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MODELYARD_GATEWAY_PORT": str(platform.gateway_port),
    }
    ran = 0
    try:
        platform.start().close()
        for block in blocks(README.read_text()):
            if block.file:
                (work / block.file).write_text(block.code)
                continue
            if block.not_run is not None or block.language not in RUN:
                continue
            command = ["bash", "-euo", "pipefail"] if RUN[block.language] == "bash" else ["python"]
            done = subprocess.run(
                [*command, "-c", block.code],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
            )
            assert done.returncode == 0, (
                f"{block} exited with {done.returncode}:\n{block.code}\n"
                f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
            )
            ran += 1
    finally:
        platform.stop()
    assert ran >= 8
