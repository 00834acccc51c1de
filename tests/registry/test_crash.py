"""kill -9 of the control plane in the middle of a commit leaves no half-visible version."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path

import pytest

from modelyard.testing import Platform, wait_for

pytestmark = pytest.mark.slow
FILES = 24
FILE_SIZE = 4 * 1024 * 1024


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
@pytest.mark.parametrize("kill_after_moved", [1, FILES // 2, FILES])
def test_kill_9_during_commit_leaves_no_partial_version(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    database: str,
    kill_after_moved: int,
    platforms: list[Platform],
) -> None:
    database_url = (
        f"sqlite:///{tmp_path / 'home' / 'modelyard.db'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    platform = Platform(tmp_path / "home", database_url)
    platforms.append(platform)
    client = platform.start()
    client.create_namespace("team")
    files = []
    draft = client.request("POST", "/namespaces/team/models/m/versions", json={})
    staging = platform.home / "blobs" / "staging" / draft["id"]
    staging.mkdir(parents=True)
    for i in range(FILES):
        data = hashlib.sha256(str(i).encode()).digest() * (FILE_SIZE // 32)
        (staging / f"part{i:02}.bin").write_bytes(data)
        files.append(
            {
                "path": f"part{i:02}.bin",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
        )

    def commit() -> None:
        with contextlib.suppress(Exception):  # the server dies under it
            client.request(
                "POST",
                f"/namespaces/team/models/m/drafts/{draft['id']}/commit",
                json={"files": files},
            )

    committing = threading.Thread(target=commit)
    committing.start()

    def moved() -> int:
        return FILES - len(list(staging.glob("part*.bin")))

    wait_for(lambda: moved() >= kill_after_moved, 30, f"{kill_after_moved} files verified")
    platform.kill()
    committing.join()
    client.close()

    client = platform.start()
    try:
        versions = client.list_versions("team/m")
        if versions:  # the commit transaction finished before the kill: all of it is there
            assert [v.number for v in versions] == [1]
            assert len(versions[0].files) == FILES
        else:  # nothing is visible, and committing the same draft again completes it
            client.request(
                "POST",
                f"/namespaces/team/models/m/drafts/{draft['id']}/commit",
                json={"files": files},
            )
        folder = client.pull("team/m@1")  # verifies every digest
        assert len(list(folder.glob("part*.bin"))) == FILES
    finally:
        platform.kill()
        client.close()
