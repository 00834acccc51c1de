from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.errors import NotFound
from modelyard.registry.records import VersionSpec
from modelyard.settings import Settings
from modelyard.types import FileEntry
from tests.conftest import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


@pytest.fixture
def plane(settings: Settings, clock: Clock) -> Iterator[ControlPlane]:
    cp = ControlPlane.build(settings, clock=clock)
    cp.namespaces.create("team")
    yield cp
    cp.close()


def entry(path: str, data: bytes) -> FileEntry:
    import hashlib

    return FileEntry(path, hashlib.sha256(data).hexdigest(), len(data))


def test_stale_drafts_and_their_uploads_are_collected(plane: ControlPlane, clock: Clock) -> None:
    versions = plane.versions
    kept = versions.create_draft("model", "team", "m", VersionSpec())
    versions.put_file("model", "team", "m", kept.id, "a.bin", [b"committed"])
    versions.commit("model", "team", "m", kept.id, [entry("a.bin", b"committed")])

    stale = versions.create_draft("model", "team", "m", VersionSpec())
    versions.put_file("model", "team", "m", stale.id, "b.bin", [b"abandoned"])
    clock.now += dt.timedelta(hours=23)
    active = versions.create_draft("model", "team", "m", VersionSpec())
    versions.put_file("model", "team", "m", active.id, "c.bin", [b"in progress"])
    clock.now += dt.timedelta(hours=2)

    collected = plane.collect_garbage()

    assert collected["drafts"] == 1
    with pytest.raises(NotFound):
        versions.get_draft("model", "team", "m", stale.id)
    assert not Path(plane.blobs.staging_key(stale.id)).exists()
    # The active draft and the committed version are untouched and still work.
    versions.commit("model", "team", "m", active.id, [entry("c.bin", b"in progress")])
    assert [v.number for v in versions.list_versions("model", "team", "m")] == [1, 2]
    assert b"".join(plane.blobs.iter_chunks(entry("a.bin", b"committed").sha256)) == b"committed"


def test_unreferenced_blobs_are_collected_once_old(plane: ControlPlane, clock: Clock) -> None:
    orphan = entry("x.bin", b"orphan")
    draft = plane.versions.create_draft("model", "team", "m", VersionSpec())
    plane.versions.put_file("model", "team", "m", draft.id, "x.bin", [b"orphan"])
    # A crash after the blob moved into place but before the commit transaction leaves this.
    plane.blobs.promote(draft.id, orphan)
    plane.versions.abort("model", "team", "m", draft.id)
    assert plane.blobs.has(orphan.sha256)

    assert plane.collect_garbage()["blobs"] == 0  # young: may belong to a commit in flight
    clock.now = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert plane.collect_garbage()["blobs"] == 1
    assert not plane.blobs.has(orphan.sha256)
