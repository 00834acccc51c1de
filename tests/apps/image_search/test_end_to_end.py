"""The reference application end to end on a small catalog: pipeline -> commit -> push-triggered
deploy -> searching with an augmented copy of an item finds that item first."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelyard.apps.image_search.catalog import (
    augment,
    emoji_catalog,
    near_duplicate_set,
    write_catalog,
)
from modelyard.apps.image_search.pipeline import image_index
from modelyard.testing import wait_for
from tests.conftest import Serving

pytestmark = pytest.mark.slow


def jpeg(path: Path, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    augment(Image.open(path), rng).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def test_pipeline_publishes_an_index_that_is_deployed_and_searched(
    serving: Serving, tmp_path: Path
) -> None:
    client = serving.client
    photos, queries = near_duplicate_set(tmp_path / "photos", copies=2, seed=0)
    emoji = emoji_catalog(limit=40)
    folder = write_catalog([*emoji, *photos], tmp_path / "catalog")
    (folder / "broken.png").write_bytes(emoji[0].path.read_bytes()[:100])
    catalog = json.loads((folder / "catalog.json").read_text())
    entries = catalog["items"] if isinstance(catalog, dict) else catalog
    entries.append(
        {"id": "broken", "file": "broken.png", "label": "x", "category": "x", "subcategory": ""}
    )
    (folder / "catalog.json").write_text(json.dumps(catalog))
    client.push("team/catalog", folder, kind="dataset")
    client.register_pipeline("team", image_index("team/image-index"))
    params = {
        "catalog": "team/catalog@latest",
        "cache": str(tmp_path / "embeddings"),
    }
    run = client.wait_run("team", client.run_pipeline("team", "image-index", params).id, 900)
    logs = "\n".join(client.run_logs("team", run.id))
    assert run.state == "succeeded", logs
    assert "skipped broken" in logs  # counted and listed, and the build went on
    version = client.get_version("team/image-index@latest")
    assert version.runtime == "image-search"
    assert version.metrics["recall_at_10"] >= 0.95
    assert version.metrics["recall_target"] == 0.95
    assert version.metrics["recall_target_reached"] == 1.0

    client.create_deployment("team", "search", "image-index@latest", timeout_s=120)
    client.wait_deployment("team", "search", timeout=300)
    rng = np.random.default_rng(3)
    for item in [emoji[5], emoji[17], photos[0]]:
        answer = serving.http.post(
            "/team/search/search",
            params={"k": 5},
            files={"image": ("q.jpg", jpeg(item.path, rng), "image/jpeg")},
        )
        assert answer.status_code == 200, answer.text
        top = answer.json()["results"][0]
        # an emoji finds itself; a photo finds itself or one of its near-duplicate copies
        assert top["id"] == item.id or (item in photos and top["subcategory"] == item.subcategory)
    by_id = serving.http.post("/team/search/search", json={"id": emoji[5].id, "k": 3})
    assert by_id.json()["results"][0]["id"] == emoji[5].id
    as_b64 = base64.b64encode(jpeg(queries[0][0], rng)).decode()
    assert serving.http.post("/team/search/search", json={"image": as_b64}).status_code == 200
    # bad input
    assert serving.http.post("/team/search/search", json={"id": "nope"}).status_code == 404
    not_image = serving.http.post(
        "/team/search/search", files={"image": ("x.jpg", b"not an image", "image/jpeg")}
    )
    assert not_image.status_code == 400
    # OIP v2 answers the embedding
    oip = serving.http.post(
        "/team/search/v2/models/search/infer",
        json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [as_b64]}]},
    )
    assert oip.status_code == 200, oip.text
    assert oip.json()["outputs"][0]["shape"] == [1, 1280]

    # a second run with one more image embeds only that one, and its commit is deployed by itself
    extra = emoji_catalog(limit=41)[-1]
    more = write_catalog([*emoji, extra, *photos], tmp_path / "catalog2")
    client.push("team/catalog", more, kind="dataset")
    second = client.wait_run("team", client.run_pipeline("team", "image-index", params).id, 900)
    assert second.state == "succeeded", second.reason
    embedded = [s for s in second.steps if s.node == "embed-catalog"][-1]
    assert "embedded 1/1" in "".join(client.run_logs("team", second.id))
    assert embedded.state == "succeeded"
    wait_for(
        lambda: (
            client.get_deployment("team", "search").revisions[-1].model_version == 2
            and client.get_deployment("team", "search").revisions[-1].state == "ready"
        ),
        300,
        "version 2 deployed by itself",
        0.5,
    )
