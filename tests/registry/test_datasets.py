from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.client import Client
from modelyard.errors import InvalidInput
from modelyard.registry.records import Lineage, LineageInput, VersionSpec


def test_datasets_version_like_models_and_feed_lineage(admin: Client, tmp_path: Path) -> None:
    admin.create_namespace("shop")
    data = tmp_path / "catalog"
    data.mkdir()
    (data / "items.csv").write_text("id,name\n1,cup\n")
    first_event = max((e.id for e in admin.events(after=0, follow=False)), default=0)

    ds = admin.push("shop/catalog", data, kind="dataset")
    assert (ds.kind, ds.number) == ("dataset", 1)
    (data / "items.csv").write_text("id,name\n1,cup\n2,plate\n")
    assert admin.push("shop/catalog", data, kind="dataset").number == 2
    assert [a.name for a in admin.list_artifacts("shop", kind="dataset")] == ["catalog"]
    assert admin.list_artifacts("shop", kind="model") == []

    model_file = tmp_path / "index.bin"
    model_file.write_bytes(b"index")
    spec = VersionSpec(
        lineage=Lineage(
            run="run-42", step="build", inputs=[LineageInput(kind="dataset", ref="shop/catalog@2")]
        )
    )
    model = admin.push("shop/index", model_file, spec)
    assert model.lineage == {
        "run": "run-42",
        "step": "build",
        "inputs": [{"kind": "dataset", "ref": "shop/catalog@2"}],
    }

    committed = [
        e
        for e in admin.events(after=first_event, follow=False)
        if e.type.endswith(".version.committed")
    ]
    assert [(e.type, e.data["version"]) for e in committed] == [
        ("dataset.version.committed", 1),
        ("dataset.version.committed", 2),
        ("model.version.committed", 1),
    ]


def test_lineage_must_name_existing_pinned_versions(admin: Client, tmp_path: Path) -> None:
    admin.create_namespace("shop")
    model_file = tmp_path / "index.bin"
    model_file.write_bytes(b"index")
    for ref in ("shop/catalog@9", "shop/catalog@latest"):
        spec = VersionSpec(lineage=Lineage(inputs=[LineageInput(kind="dataset", ref=ref)]))
        with pytest.raises(InvalidInput, match="lineage"):
            admin.push("shop/index", model_file, spec)
    assert admin.list_artifacts("shop") == []
