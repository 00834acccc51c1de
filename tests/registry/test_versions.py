from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelyard.client import Client
from modelyard.errors import Conflict, IntegrityError, NotFound
from modelyard.registry.records import VersionSpec


def make_model(folder: Path, weights: bytes = b"weights-1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(weights)
    (folder / "conf").mkdir(exist_ok=True)
    (folder / "conf" / "labels.txt").write_text("cat\ndog\n")
    return folder


def test_push_commit_alias_pull_roundtrip(admin: Client, tmp_path: Path) -> None:
    admin.create_namespace("vision")
    src = make_model(tmp_path / "src")
    v1 = admin.push("vision/resnet", src, VersionSpec(runtime="sklearn", metrics={"acc": 0.9}))
    assert (v1.number, v1.state, v1.runtime) == (1, "committed", "sklearn")
    assert sorted(f.path for f in v1.files) == ["conf/labels.txt", "model.bin"]

    v2 = admin.push(
        "vision/resnet", make_model(tmp_path / "src2", b"weights-2"), alias="production"
    )
    assert v2.number == 2 and v2.aliases == ["production"]
    assert admin.get_version("vision/resnet@production").number == 2
    assert admin.get_version("vision/resnet").number == 2  # latest

    admin.set_alias("vision/resnet@1", "production")
    assert admin.get_version("vision/resnet@production").number == 1
    history = admin.alias_history("vision/resnet", "production")
    assert [(h.previous, h.version) for h in history] == [(None, 2), (2, 1)]

    folder = admin.pull("vision/resnet@production")
    assert (folder / "model.bin").read_bytes() == b"weights-1"
    assert (folder / "conf" / "labels.txt").read_text() == "cat\ndog\n"
    assert admin.pull("vision/resnet@1") == folder  # reused from the cache


def test_commit_with_wrong_digest_names_the_file_and_changes_nothing(
    admin: Client, tmp_path: Path
) -> None:
    admin.create_namespace("vision")
    base = "/namespaces/vision/models/m"
    draft = admin.request("POST", f"{base}/versions", json={})
    admin.request("PUT", f"{base}/drafts/{draft['id']}/files/a.bin", content=b"hello")
    wrong = {"path": "a.bin", "sha256": "0" * 64, "size": 5}
    with pytest.raises(IntegrityError, match=re.escape("a.bin")):
        admin.request("POST", f"{base}/drafts/{draft['id']}/commit", json={"files": [wrong]})
    missing = {"path": "b.bin", "sha256": "1" * 64, "size": 5}
    with pytest.raises(IntegrityError, match=re.escape("b.bin")):
        admin.request("POST", f"{base}/drafts/{draft['id']}/commit", json={"files": [missing]})
    assert admin.list_versions("vision/m") == []
    with pytest.raises(NotFound):
        admin.get_version("vision/m@latest")


def test_committed_versions_are_immutable(admin: Client, tmp_path: Path) -> None:
    admin.create_namespace("vision")
    base = "/namespaces/vision/models/m"
    draft = admin.request("POST", f"{base}/versions", json={})
    entry = admin.request("PUT", f"{base}/drafts/{draft['id']}/files/a.bin", content=b"x")
    admin.request("POST", f"{base}/drafts/{draft['id']}/commit", json={"files": [entry]})
    with pytest.raises(Conflict, match="immutable"):
        admin.request("POST", f"{base}/drafts/{draft['id']}/commit", json={"files": [entry]})
    with pytest.raises(Conflict):
        admin.request("PUT", f"{base}/drafts/{draft['id']}/files/b.bin", content=b"y")
    assert [v.number for v in admin.list_versions("vision/m")] == [1]


def test_concurrent_commits_get_distinct_consecutive_numbers(admin: Client, tmp_path: Path) -> None:
    import threading

    admin.create_namespace("vision")
    numbers: list[int] = []
    failures: list[Exception] = []

    def push(i: int) -> None:
        path = tmp_path / f"w{i}.bin"
        path.write_bytes(f"weights {i}".encode())
        try:
            version = admin.push("vision/shared", path)
            assert version.number is not None
            numbers.append(version.number)
        except Exception as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sorted(numbers) == list(range(1, 9))
    assert [v.number for v in admin.list_versions("vision/shared")] == list(range(1, 9))
