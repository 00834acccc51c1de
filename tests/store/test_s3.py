"""The registry on S3, against a real S3-compatible HTTP server (moto) on 127.0.0.1."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.api.server import BackgroundServer
from modelyard.client import Client
from modelyard.controlplane import ControlPlane
from modelyard.errors import IntegrityError
from modelyard.settings import Settings
from modelyard.testing import free_port

CREDENTIALS = {"key": "modelyard-test", "secret": "modelyard-test-secret"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, s3_endpoint: str) -> Settings:
    import boto3

    bucket = f"models-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=CREDENTIALS["key"],
        aws_secret_access_key=CREDENTIALS["secret"],
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    return Settings(
        home=tmp_path / "home",
        api_port=0,
        blob_url=f"s3://{bucket}/registry",
        blob_options={**CREDENTIALS, "endpoint_url": s3_endpoint},
    )


def test_push_and_pull_move_bytes_straight_through_presigned_urls(
    admin: Client, plane: ControlPlane, tmp_path: Path, s3_endpoint: str
) -> None:
    admin.create_namespace("team")
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(bytes(range(256)) * 40_000)
    (src / "sub" / "labels.txt").write_text("a\nb\n")

    draft = admin.request("POST", "/namespaces/team/models/m/versions", json={})
    plan = admin.request(
        "POST",
        f"/namespaces/team/models/m/drafts/{draft['id']}/uploads",
        json={"files": [{"path": "x", "sha256": "a" * 64, "size": 1}]},
    )
    assert plan[0]["method"] == "PUT" and plan[0]["url"].startswith(s3_endpoint)

    version = admin.push("team/m", src, alias="production")
    keys = plane.blobs.fs.find(plane.blobs.root)
    assert {k.rsplit("/", 1)[-1] for k in keys} == {f.sha256 for f in version.files}

    folder = admin.pull("team/m@production")
    assert (folder / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    assert (folder / "sub" / "labels.txt").read_text() == "a\nb\n"
    downloads = admin.request("GET", "/namespaces/team/models/m/versions/1/downloads")
    assert all(f["method"] == "GET" for f in downloads["files"])


def test_a_wrong_upload_to_s3_is_refused_at_commit(admin: Client, plane: ControlPlane) -> None:
    admin.create_namespace("team")
    base = "/namespaces/team/models/m"
    draft = admin.request("POST", f"{base}/versions", json={})
    entry = admin.request("PUT", f"{base}/drafts/{draft['id']}/files/a.bin", content=b"abc")
    with pytest.raises(IntegrityError, match=re.escape("a.bin")):
        admin.request(
            "POST", f"{base}/drafts/{draft['id']}/commit", json={"files": [{**entry, "size": 4}]}
        )
    assert admin.list_versions("team/m") == []
    version = admin.request("POST", f"{base}/drafts/{draft['id']}/commit", json={"files": [entry]})
    assert version["number"] == 1
    assert not plane.blobs.staged_drafts()


def test_the_control_plane_serves_files_when_the_client_cannot_reach_s3(
    plane: ControlPlane, tmp_path: Path
) -> None:
    plane.ensure_admin_key()
    token = plane.settings.admin_key_path.read_text().strip()
    with (
        BackgroundServer(plane) as server,
        Client(server.url, token, cache_dir=tmp_path / "c") as client,
    ):
        client.create_namespace("team")
        (tmp_path / "w.bin").write_bytes(b"weights")
        client.push("team/m", tmp_path / "w.bin")
        response = client.http.get("/namespaces/team/models/m/versions/1/files/w.bin")
        assert response.content == b"weights"
        assert response.headers["etag"].strip('"') == client.get_version("team/m@1").files[0].sha256
