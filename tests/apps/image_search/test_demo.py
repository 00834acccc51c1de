"""``make demo`` as a user runs it: twice in the same folder, the second run serving as the
first did (it once answered 504 after 60 s: its gateway held a routing table from the first).

The first run (``--once``) shows the broken catalog files being skipped and the recall line; the
second pushes no new dataset version, serves until interrupted, and the curl it prints, run as
printed, answers with search results."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.testing import free_port, wait_for

pytestmark = pytest.mark.slow


def demo(home: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "modelyard.apps.image_search.demo",
        "--emoji",
        "10",
        "--home",
        str(home),
        "--api-port",
        str(free_port()),
        "--gateway-port",
        str(free_port()),
        *extra,
    ]


def platform_log(home: Path) -> str:
    log = home / "platform.log"
    return log.read_text()[-3000:] if log.exists() else ""


def test_the_demo_runs_twice_in_one_home_and_its_curl_works(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    first = subprocess.run(demo(home, "--once"), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, f"{first.stdout[-3000:]}\n{first.stderr[-3000:]}"
    out = first.stdout
    assert "queries: augmented copies" in out, out
    assert "dataset demo/catalog@1: 10 emoji" in out, out
    assert "  skipped broken-truncated.png: not an image" in out, out
    assert (
        "  skipped broken-not-an-image.jpg: not an image: no JPEG, PNG, WebP, GIF, BMP or TIFF "
        "decoder recognises the data (it begins b'this is no image')\n"
    ) in out, out
    (recall,) = [line for line in out.splitlines() if "recall@10" in line]
    assert re.fullmatch(
        r"  exact index of \d+ vectors: recall@10 1\.000, target 0\.95 reached", recall
    )

    # The second run serves until Ctrl-C; its output goes to a file the test reads as it grows.
    output = tmp_path / "second.out"
    with output.open("w") as sink:
        second = subprocess.Popen(demo(home), stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(
            lambda: second.poll() is not None or "Serving until Ctrl-C" in output.read_text(),
            600,
            "the second run to serve",
            0.2,
        )
        out = output.read_text()
        assert second.poll() is None, f"{out[-3000:]}\n{platform_log(home)}"
        assert "unchanged since the last run: nothing pushed" in out, out
        assert "embed-catalog, build-index: from the cache" in out, out
        (curl,) = [line.strip() for line in out.splitlines() if line.strip().startswith("curl ")]
        assert f"-F image=@{home / 'query.jpg'} " in curl and (home / "query.jpg").is_file()
        answered = subprocess.run(
            ["bash", "-c", curl + " --fail-with-body --silent --show-error"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert answered.returncode == 0, answered.stdout + answered.stderr
        results = json.loads(answered.stdout)["results"]
        assert len(results) == 5 and results[0]["id"].startswith("photo-"), results
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(120)  # it stops the platform: replicas drain, the gateway stops
    assert second.returncode == 0, f"{output.read_text()[-3000:]}\n{platform_log(home)}"
