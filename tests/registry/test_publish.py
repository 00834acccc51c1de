"""Publishing files that are in the blob store already: the pipeline's way to commit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelyard.controlplane import ControlPlane
from modelyard.errors import IntegrityError, NotFound
from modelyard.registry.publish import Publisher, lineage, numeric_metrics
from modelyard.registry.records import VersionSpec
from modelyard.types import FileEntry, ModelRef


def stored(plane: ControlPlane, tmp_path: Path, data: bytes) -> FileEntry:
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    digest, size = plane.blobs.put_file(str(path))
    return FileEntry("model.bin", digest, size)


def test_a_publish_commits_a_version_and_moves_its_alias(
    plane: ControlPlane, tmp_path: Path
) -> None:
    plane.namespaces.create("team")
    publisher = Publisher(plane.versions, plane.aliases)
    ref = ModelRef.parse("team/clf")
    first = publisher.publish("model", ref, [stored(plane, tmp_path, b"one")], VersionSpec())
    second = publisher.publish(
        "model",
        ref,
        [stored(plane, tmp_path, b"two")],
        VersionSpec(metrics={"accuracy": 0.9}),
        alias="candidate",
        actor="run:abc",
    )
    assert (first.number, second.number) == (1, 2)
    found = plane.versions.get("model", "team", "clf", "candidate")
    assert found.number == 2 and found.metrics == {"accuracy": 0.9}
    assert [f.sha256 for f in found.files] == [hashlib.sha256(b"two").hexdigest()]


def test_a_file_the_store_lacks_publishes_nothing(plane: ControlPlane) -> None:
    plane.namespaces.create("team")
    publisher = Publisher(plane.versions, plane.aliases)
    missing = FileEntry("model.bin", hashlib.sha256(b"never stored").hexdigest(), 12)
    with pytest.raises(IntegrityError, match="never uploaded"):
        publisher.publish(
            "model", ModelRef.parse("team/clf"), [missing], VersionSpec(), alias="production"
        )
    with pytest.raises(NotFound):
        plane.versions.get("model", "team", "clf", "latest")


def test_metrics_are_the_numbers_of_the_metadata_later_sources_winning() -> None:
    assert numeric_metrics(
        {"accuracy": 0.5, "name": "x", "ok": True}, {"accuracy": 0.7, "rows": 10}
    ) == {"accuracy": 0.7, "rows": 10}


def test_lineage_lists_each_input_once_in_first_seen_order() -> None:
    found = lineage(
        "r1",
        "train",
        [
            {"kind": "dataset", "ref": "team/d@2"},
            {"kind": "model", "ref": "team/m@1"},
            {"kind": "dataset", "ref": "team/d@2"},
        ],
    )
    assert (found.run, found.step) == ("r1", "train")
    assert [(i.kind, i.ref) for i in found.inputs] == [
        ("dataset", "team/d@2"),
        ("model", "team/m@1"),
    ]
