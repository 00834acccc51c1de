"""The ``image-index`` pipeline: catalog images -> embeddings -> ANN index -> recall -> a version.

Two steps, each in its own process:

1. ``embed_catalog`` reads the catalog of a dataset version (``catalog.json`` and the images),
   embeds every image with the embedder, and keeps the vectors in an embedding cache keyed by the
   image's content digest and the embedder's identity (model and weights digest): an image seen
   before is not embedded again, whatever its name or the catalog version it comes in. Corrupt or
   truncated images are skipped, counted and listed in the step's report; an empty catalog, or
   one where nothing could be decoded, fails the step and nothing is published.
2. ``build_index`` builds the index (exact for small catalogs, HNSW, or IVF-PQ for large ones),
   raises its search-time knob (HNSW efSearch, IVF-PQ nprobe) until its recall@10 against exact
   search on a sample reaches ``recall_target`` (`tune_recall`; a target out of reach is logged
   and recorded, not hidden), and writes the model version's folder:
   the index, the items (id, label, category), the vectors and the embedder's identity. The
   pipeline publishes it with the ``image-search`` runtime, so a deployment following the model
   serves it as soon as it is committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from modelyard.pipelines.artifacts import Artifact, Dataset, Input, Metrics, Model, Output
from modelyard.pipelines.dsl import Pipeline, importer, pipeline, step

DEFAULT_CACHE = "~/.cache/modelyard/embeddings"


@step(timeout_seconds=6 * 3600, retries=1)
def embed_catalog(
    catalog: Input[Dataset],
    embeddings: Output[Artifact],
    report: Output[Metrics],
    embedder: str = "efficientnet-lite0",
    batch_size: int = 32,
    cache: str = DEFAULT_CACHE,
) -> int:
    from modelyard.apps.image_search.catalog import read_catalog
    from modelyard.apps.image_search.embedders import decode_image, load_embedder
    from modelyard.errors import InvalidInput, ModelyardError

    items = read_catalog(Path(catalog.path))
    if not items:
        raise InvalidInput("the catalog is empty: add images to the dataset version")
    model = load_embedder(embedder, batch_size=batch_size)
    store = EmbeddingCache(Path(os.path.expanduser(cache)), model.name, model.dim)
    digests = [hashlib.sha256(item.path.read_bytes()).hexdigest() for item in items]
    missing = [i for i, digest in enumerate(digests) if digest not in store]
    skipped: list[str] = []
    started = time.perf_counter()
    for first in range(0, len(missing), batch_size):
        chunk = missing[first : first + batch_size]
        images, kept = [], []
        for i in chunk:
            try:
                images.append(decode_image(items[i].path.read_bytes()))
                kept.append(i)
            except ModelyardError as exc:
                skipped.append(f"{items[i].id}: {exc.message}")
        if images:
            store.add([digests[i] for i in kept], model.embed(images))
        print(f"embedded {min(first + batch_size, len(missing))}/{len(missing)}", flush=True)
    store.save()
    elapsed = time.perf_counter() - started
    good = [i for i, digest in enumerate(digests) if digest in store]
    if not good:
        raise InvalidInput(f"none of the {len(items)} catalog images could be decoded: {skipped}")
    folder = Path(embeddings.path)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", np.stack([store.get(digests[i]) for i in good]))
    (folder / "items.json").write_text(
        json.dumps(
            [
                {
                    "id": items[i].id,
                    "label": items[i].label,
                    "category": items[i].category,
                    "subcategory": items[i].subcategory,
                    "sha256": digests[i],
                }
                for i in good
            ]
        )
    )
    (folder / "embedder.json").write_text(
        json.dumps({"kind": embedder, "name": model.name, "dim": model.dim})
    )
    (folder / "skipped.json").write_text(json.dumps(skipped))
    report.log_metric("images", len(items))
    report.log_metric("embedded_now", len(missing) - len(skipped))
    report.log_metric("reused", len(items) - len(missing))
    report.log_metric("skipped", len(skipped))
    if len(missing) > len(skipped):
        report.log_metric("images_per_second", (len(missing) - len(skipped)) / elapsed)
    for line in skipped:
        print(f"skipped {line}", flush=True)
    return len(good)


@step(timeout_seconds=6 * 3600)
def build_index(
    embeddings: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    index: str = "auto",
    recall_target: float = 0.95,
) -> float:
    import shutil
    from dataclasses import asdict

    from modelyard.apps.image_search.index import build_index as build
    from modelyard.apps.image_search.index import tune_recall

    source = Path(embeddings.path)
    vectors = np.load(source / "vectors.npy")
    started = time.perf_counter()
    built = build(vectors, index)
    seconds = time.perf_counter() - started
    tuning = tune_recall(built, vectors, target=recall_target, k=10)
    folder = Path(model.path)
    folder.mkdir(parents=True, exist_ok=True)
    built.save(folder / "index")
    for name in ("vectors.npy", "items.json", "embedder.json"):
        shutil.copyfile(source / name, folder / name)
    (folder / "index.json").write_text(
        json.dumps(
            {
                "kind": built.kind,
                "params": built.params,
                "size": built.size,
                "tuning": asdict(tuning),
            }
        )
    )
    for name, value in tuning.metrics().items():
        metrics.log_metric(name, value)
    metrics.log_metric("index_build_seconds", seconds)
    metrics.log_metric("items", float(built.size))
    tried = ", ".join(f"{value}: {recall:.3f}" for value, recall in tuning.tried)
    params = f" {built.params}" if built.params else ""
    print(
        f"{built.kind} index of {built.size} vectors{params}: recall@10 "
        f"{tuning.recall:.3f}, target {recall_target} "
        + ("reached" if tuning.reached else "NOT reached at the knob's limit")
        + (f" ({tuning.knob} tried {tried})" if tried else ""),
        flush=True,
    )
    return tuning.recall


def image_index(target: str = "demo/image-index") -> Pipeline:
    """The ``image-index`` pipeline publishing to ``target`` (namespace/name: where a version is
    committed is part of the pipeline, not a run parameter)."""

    @pipeline(name="image-index")
    def image_index(
        catalog: str = "demo/catalog@latest",
        embedder: str = "efficientnet-lite0",
        index: str = "auto",
        recall_target: float = 0.95,
        cache: str = DEFAULT_CACHE,
    ) -> None:
        data = importer("dataset", catalog)
        vectors = embed_catalog(catalog=data, embedder=embedder, cache=cache)
        built = build_index(
            embeddings=vectors.outputs["embeddings"], index=index, recall_target=recall_target
        )
        built.publish("model", target, runtime="image-search")

    built: Pipeline = image_index
    return built


class EmbeddingCache:
    """Vectors by (image content digest) for one embedder identity, in one ``.npz`` file that is
    replaced atomically: a crash keeps the previous file."""

    def __init__(self, folder: Path, embedder: str, dim: int) -> None:
        safe = hashlib.sha256(embedder.encode()).hexdigest()[:16]
        self.path = folder / f"{safe}.npz"
        self.dim = dim
        self._vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            with np.load(self.path) as stored:
                for digest, vector in zip(stored["digests"], stored["vectors"], strict=True):
                    self._vectors[str(digest)] = vector

    def __contains__(self, digest: str) -> bool:
        return digest in self._vectors

    def get(self, digest: str) -> np.ndarray:
        return self._vectors[digest]

    def add(self, digests: list[str], vectors: np.ndarray) -> None:
        for digest, vector in zip(digests, vectors, strict=True):
            self._vectors[digest] = vector

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.npz")
        digests = list(self._vectors)
        vectors = (
            np.stack([self._vectors[d] for d in digests])
            if digests
            else np.zeros((0, self.dim), np.float32)
        )
        np.savez(temp, digests=np.array(digests), vectors=vectors)
        os.replace(temp, self.path)
