from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from modelyard.client import Client
from modelyard.errors import IntegrityError
from modelyard.registry.pull import cache_path


def test_a_corrupted_blob_is_refused_and_leaves_no_cache_entry(
    admin: Client, tmp_path: Path
) -> None:
    admin.create_namespace("team")
    (tmp_path / "w.bin").write_bytes(b"good weights" * 1000)
    version = admin.push("team/m", tmp_path / "w.bin")
    blob = Path(admin_plane_blob(admin, version.files[0].sha256))
    blob.write_bytes(b"bit rot" * 1000)

    with pytest.raises(IntegrityError, match=re.escape("w.bin")):
        admin.pull("team/m@1")
    folder = cache_path(admin.cache_dir, version)
    assert not folder.exists()
    assert list(folder.parent.iterdir()) == []  # no temporary folder left behind


def test_concurrent_pulls_of_one_version_agree(admin: Client, tmp_path: Path) -> None:
    admin.create_namespace("team")
    for i in range(5):
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / f"part{i}.bin").write_bytes(bytes([i]) * 200_000)
    admin.push("team/m", tmp_path / "src")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(admin.pull("team/m@1"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 4
    folder = results[0]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        f"part{i}.bin" for i in range(5)
    ]
    assert len(list(folder.parent.iterdir())) == 1


def admin_plane_blob(client: Client, digest: str) -> str:
    plan = client.request("GET", "/namespaces/team/models/m/versions/1/downloads")
    url: str = next(f["url"] for f in plan["files"] if f["sha256"] == digest)
    return url.removeprefix("file://")
