"""Nearest-neighbour indexes over L2-normalised embeddings, backed by faiss.

Every kind scores by inner product, which on unit vectors is the cosine similarity, so scores are
comparable across kinds and `recall_at_k` can grade an approximate index against exact search on
the same vectors, and `tune_recall` raises an index's search-time knob until that recall reaches a
target. An index is saved as a folder of two files: the faiss index and a small
``index.json`` naming its kind and parameters, which `load_index` dispatches on.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np
import numpy.typing as npt

from modelyard.errors import InvalidInput, NotFound

INDEX_FILE = "index.faiss"
META_FILE = "index.json"
FORMAT = 1

# Below this many vectors a brute-force scan is fast enough and exact; above the second bound the
# full-precision vectors of an HNSW graph no longer fit comfortably in memory and a compressed
# IVF-PQ index takes over.
EXACT_BELOW = 2_000
HNSW_BELOW = 1_000_000
# The most `tune_recall` raises HNSW's efSearch to by default.
EF_SEARCH_LIMIT = 4_096

Scores = npt.NDArray[np.float32]
Positions = npt.NDArray[np.int64]


def choose_kind(n: int) -> str:
    """The kind ``build_index(kind="auto")`` picks for a catalog of ``n`` vectors."""
    if n < EXACT_BELOW:
        return "exact"
    if n < HNSW_BELOW:
        return "hnsw"
    return "ivfpq"


class VectorIndex(ABC):
    """Top-k search by cosine similarity over the vectors it was built on.

    Positions are row numbers into those vectors, so callers keep their own id list in the same
    order. ``params`` holds every knob with its defaults applied, JSON-serialisable, because it
    is recorded in the model version's metadata.
    """

    kind: ClassVar[str]
    allowed: ClassVar[frozenset[str]]
    # The search-time parameter that trades query time for recall, which `tune_recall` raises;
    # None for an exact index.
    knob: ClassVar[str | None] = None

    def __init__(self, index: Any, params: dict[str, Any]) -> None:
        self._index = index
        self.params = params
        self._configure()

    def _configure(self) -> None:
        """Apply the search-time knobs, which faiss keeps outside what it saves for some kinds."""
        return None

    def knob_limit(self) -> int:
        """The largest value of ``knob`` worth trying (past it, search is no longer cheaper)."""
        raise NotImplementedError(f"a {self.kind!r} index has no search-time knob")

    def set_knob(self, value: int) -> None:
        """Set the search-time knob; it is kept in ``params``, so `save` records it."""
        if self.knob is None:
            raise InvalidInput(f"a {self.kind!r} index has no search-time knob")
        self.params[self.knob] = _positive_int({self.knob: value}, self.knob, 0)
        self._configure()

    @classmethod
    @abstractmethod
    def build(cls, vectors: npt.NDArray[np.float32], **params: Any) -> VectorIndex:
        """Build an index of this kind over ``vectors`` (already validated)."""

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[Scores, Positions]:
        """The ``k`` best vectors for each query row, best first.

        Returns ``(scores, positions)``, both shaped ``(n_queries, k)``; where the index holds
        fewer than ``k`` vectors the missing slots have position -1 and score ``-inf``. A single
        1-d query is treated as one row.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        rows = _as_matrix(queries, "queries", dim=self.dim)
        scores, positions = self._index.search(rows, k)
        positions = positions.astype(np.int64, copy=False)
        scores = scores.astype(np.float32, copy=False)
        # faiss marks missing results with -1 but a kind-dependent sentinel score; one value
        # for every kind keeps callers from special-casing.
        scores[positions < 0] = -np.inf
        return scores, positions

    def save(self, folder: Path) -> None:
        """Write the index into ``folder``; ``index.json`` is written last, as the commit mark."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{INDEX_FILE}.tmp"
        faiss.write_index(self._index, str(tmp))
        _fsync(tmp)
        os.replace(tmp, folder / INDEX_FILE)
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "params": self.params,
            "size": self.size,
            "dim": self.dim,
            "metric": "inner_product",
        }
        _write_atomic(folder / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> VectorIndex:
        """Read an index saved by `save`; on a subclass, the saved kind must be that class's."""
        folder = Path(folder)
        meta = _read_meta(folder)
        kind = meta["kind"]
        impl = _KINDS[kind]
        if cls is not VectorIndex and impl is not cls:
            raise InvalidInput(f"{folder} holds a {kind!r} index, not a {cls.kind!r} one")
        path = folder / INDEX_FILE
        if not path.is_file():
            raise NotFound(f"{path} is missing: save the index again with VectorIndex.save")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise InvalidInput(f"{path} is not a readable faiss index: {exc}") from exc
        if int(index.ntotal) != meta["size"] or int(index.d) != meta["dim"]:
            raise InvalidInput(
                f"{path} holds {index.ntotal} vectors of dim {index.d} but {META_FILE} says "
                f"{meta['size']} of dim {meta['dim']}: the folder mixes two saves"
            )
        return impl(index, dict(meta["params"]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, dim={self.dim}, params={self.params})"


class ExactIndex(VectorIndex):
    """Brute-force inner product: exact, O(n) per query; the yardstick for the others."""

    kind = "exact"
    allowed = frozenset()

    @classmethod
    def build(cls, vectors: npt.NDArray[np.float32], **params: Any) -> ExactIndex:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return cls(index, {})


class HNSWIndex(VectorIndex):
    """A hierarchical navigable small-world graph over the full-precision vectors."""

    kind = "hnsw"
    allowed = frozenset({"M", "efConstruction", "efSearch"})
    knob = "efSearch"

    def _configure(self) -> None:
        self._index.hnsw.efSearch = self.params["efSearch"]

    def knob_limit(self) -> int:
        # A candidate list as long as the index visits every vector: an exhaustive scan that
        # costs more than a flat one. The cap keeps a hopeless target from taking hours.
        return max(int(self.params["efSearch"]), min(EF_SEARCH_LIMIT, self.size))

    @classmethod
    def build(cls, vectors: npt.NDArray[np.float32], **params: Any) -> HNSWIndex:
        applied = {
            "M": _positive_int(params, "M", 32),
            "efConstruction": _positive_int(params, "efConstruction", 200),
            "efSearch": _positive_int(params, "efSearch", 128),
        }
        index = faiss.IndexHNSWFlat(vectors.shape[1], applied["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = applied["efConstruction"]
        index.add(vectors)
        return cls(index, applied)


class IVFPQIndex(VectorIndex):
    """Inverted lists over k-means cells with product-quantised codes: for large catalogs.

    Each vector is stored in ``m`` bytes (at ``nbits=8``) instead of ``4 * dim``, at the cost of
    approximate scores; ``nprobe`` cells are scanned per query.
    """

    kind = "ivfpq"
    allowed = frozenset({"nlist", "m", "nbits", "nprobe"})
    knob = "nprobe"

    def _configure(self) -> None:
        self._index.nprobe = self.params["nprobe"]

    def knob_limit(self) -> int:
        # Probing every cell still compares PQ codes, not vectors: recall stays below 1.
        return int(self.params["nlist"])

    def set_knob(self, value: int) -> None:
        if value > self.params["nlist"]:
            raise InvalidInput(f"ivfpq: nprobe={value} cannot exceed nlist={self.params['nlist']}")
        super().set_knob(value)

    @classmethod
    def build(cls, vectors: npt.NDArray[np.float32], **params: Any) -> IVFPQIndex:
        n, dim = vectors.shape
        # faiss's k-means wants about 39 points per centroid; fewer cells than 4*sqrt(n) keeps
        # small catalogs from training cells on a handful of points.
        nlist = _positive_int(params, "nlist", max(1, min(round(4 * math.sqrt(n)), n // 39)))
        m = _positive_int(params, "m", _default_m(dim))
        # Each sub-quantizer trains 2**nbits centroids on the same n points: shrink the code
        # book for small catalogs rather than train 256 centroids on a few points each.
        nbits = _positive_int(params, "nbits", max(4, min(8, int(math.log2(max(n, 1) / 39)))))
        nprobe = _positive_int(params, "nprobe", min(nlist, max(1, round(math.sqrt(nlist)))))
        if dim % m:
            raise InvalidInput(f"ivfpq: m={m} must divide the vector dimension {dim}")
        if nlist > n:
            raise InvalidInput(f"ivfpq: nlist={nlist} needs at least as many vectors, got {n}")
        if nbits > 16 or n < 2**nbits:
            raise InvalidInput(
                f"ivfpq: nbits={nbits} needs 2**nbits <= number of vectors ({n}) and nbits <= 16"
            )
        if nprobe > nlist:
            raise InvalidInput(f"ivfpq: nprobe={nprobe} cannot exceed nlist={nlist}")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.add(vectors)
        return cls(index, {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": nprobe})


_KINDS: dict[str, type[VectorIndex]] = {
    cls.kind: cls for cls in (ExactIndex, HNSWIndex, IVFPQIndex)
}


def build_index(vectors: npt.ArrayLike, kind: str = "auto", **params: Any) -> VectorIndex:
    """Index ``vectors`` (rows L2-normalised) for cosine top-k search.

    ``kind`` is "exact", "hnsw", "ivfpq" or "auto" (by size, see `choose_kind`). ``params`` are
    the knobs of that kind (hnsw: M, efConstruction, efSearch; ivfpq: nlist, m, nbits, nprobe);
    the returned index's ``params`` holds them with the defaults applied.
    """
    rows = _as_matrix(vectors, "vectors")
    if rows.shape[0] == 0:
        raise InvalidInput("cannot index zero vectors")
    chosen = choose_kind(rows.shape[0]) if kind == "auto" else kind
    impl = _KINDS.get(chosen)
    if impl is None:
        raise InvalidInput(f"unknown index kind {kind!r}: use auto, {', '.join(sorted(_KINDS))}")
    unknown = set(params) - impl.allowed
    if unknown:
        allowed = ", ".join(sorted(impl.allowed)) or "none"
        raise InvalidInput(
            f"unknown parameter(s) {', '.join(sorted(unknown))} for a {chosen!r} index "
            f"(allowed: {allowed})"
        )
    return impl.build(rows, **params)


def load_index(folder: Path) -> VectorIndex:
    """Read the index `VectorIndex.save` wrote into ``folder``, whatever its kind."""
    return VectorIndex.load(folder)


def recall_at_k(
    index: VectorIndex,
    vectors: npt.ArrayLike,
    *,
    k: int = 10,
    sample: int = 500,
    seed: int = 0,
) -> float:
    """Mean share of the exact top-k that ``index`` returns, over a seeded sample of queries.

    ``vectors`` must be the rows the index was built on, in the same order, since positions are
    compared. The queries are a sample of those rows (so every query has a true self match).
    """
    return _Grader(index, vectors, k, sample, seed).recall(index)


@dataclass(frozen=True)
class Tuning:
    """What `tune_recall` did. ``value`` is the knob's value left set on the index and
    ``recall`` the recall@k measured there; ``reached`` is False when the knob hit its limit
    first. ``tried`` lists every (value, recall) measured, in order."""

    kind: str
    knob: str | None
    value: int | None
    k: int
    recall: float
    target: float
    reached: bool
    tried: tuple[tuple[int, float], ...]

    def metrics(self) -> dict[str, float]:
        """Numbers for a model version's metrics: the recall, the target, whether it was reached
        and the knob's value (``hnsw_efSearch``, ``ivfpq_nprobe``)."""
        numbers = {
            f"recall_at_{self.k}": self.recall,
            "recall_target": self.target,
            "recall_target_reached": float(self.reached),
        }
        if self.knob is not None and self.value is not None:
            numbers[f"{self.kind}_{self.knob}"] = float(self.value)
        return numbers


def tune_recall(
    index: VectorIndex,
    vectors: npt.ArrayLike,
    *,
    target: float = 0.95,
    k: int = 10,
    sample: int = 500,
    seed: int = 0,
    limit: int | None = None,
) -> Tuning:
    """Raise ``index``'s search-time knob (HNSW ``efSearch``, IVF-PQ ``nprobe``) until its
    recall@k against exact search on a seeded sample reaches ``target``.

    The knob starts at its current value and doubles, up to ``limit`` (by default the kind's
    `VectorIndex.knob_limit`); it is never lowered. The value it ends on stays in
    ``index.params``, so `VectorIndex.save` records it and `load_index` applies it. When the
    limit comes first the index keeps the limit, the best recall measured, and the result says
    ``reached=False``: this index cannot get there at any search cost worth paying, so build
    another (HNSW with a larger M or efConstruction, IVF-PQ with more bytes per vector) or search
    exactly. An exact index needs no tuning (recall 1).
    ``vectors`` are the rows the index was built on, as for `recall_at_k`.
    """
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 1:
        raise InvalidInput(f"the recall target must be in (0, 1], got {target!r}")
    grader = _Grader(index, vectors, k, sample, seed)
    knob = index.knob
    if knob is None:
        recall = grader.recall(index)
        return Tuning(index.kind, None, None, grader.k, recall, target, recall >= target, ())
    value = int(index.params[knob])
    cap = max(value, index.knob_limit() if limit is None else int(limit))
    tried: list[tuple[int, float]] = []
    while True:
        index.set_knob(value)
        recall = grader.recall(index)
        tried.append((value, recall))
        if recall >= target or value >= cap:
            reached = recall >= target
            return Tuning(index.kind, knob, value, grader.k, recall, target, reached, tuple(tried))
        value = min(2 * value, cap)


class _Grader:
    """A seeded sample of the indexed rows and their exact top-k, computed once so that an
    index can be graded at several knob values."""

    def __init__(
        self, index: VectorIndex, vectors: npt.ArrayLike, k: int, sample: int, seed: int
    ) -> None:
        rows = _as_matrix(vectors, "vectors", dim=index.dim)
        n = int(rows.shape[0])
        if n != index.size:
            raise InvalidInput(
                f"recall needs the {index.size} vectors the index was built on, got {n}"
            )
        if k < 1 or sample < 1:
            raise InvalidInput(f"k and sample must be positive, got k={k}, sample={sample}")
        self.k = min(k, n)
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(n, size=min(sample, n), replace=False))
        self.queries = np.ascontiguousarray(rows[picked])
        # faiss.knn scans the rows in blocks without copying them into an index of their own.
        _, self.truth = faiss.knn(self.queries, rows, self.k, metric=faiss.METRIC_INNER_PRODUCT)

    def recall(self, index: VectorIndex) -> float:
        _, found = index.search(self.queries, self.k)
        hits = sum(
            len(set(t.tolist()) & set(f[f >= 0].tolist()))
            for t, f in zip(self.truth, found, strict=True)
        )
        return hits / (len(self.queries) * self.k)


def _as_matrix(
    data: npt.ArrayLike, what: str, *, dim: int | None = None
) -> npt.NDArray[np.float32]:
    try:
        array = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be a numeric array: {exc}") from exc
    if array.ndim == 1 and dim is not None:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] == 0:
        raise InvalidInput(f"{what} must be a 2-d array (n, dim), got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise InvalidInput(f"{what} have dimension {array.shape[1]}, the index has {dim}")
    if not np.isfinite(array).all():
        raise InvalidInput(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(array)


def _positive_int(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInput(f"index parameter {name} must be a positive integer, got {value!r}")
    return int(value)


def _default_m(dim: int) -> int:
    """The largest divisor of ``dim`` up to 128 that leaves at least 4 dimensions per code.

    On EfficientNet embeddings of the emoji catalog (dim 1280), 128 sub-quantizers reach a
    recall@10 of 0.83 where 64 reach 0.76, for 128 bytes a vector instead of 5,120.
    """
    limit = max(1, min(128, dim // 4))
    return max(m for m in range(1, limit + 1) if dim % m == 0)


def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    if not path.is_file():
        raise NotFound(f"no index in {folder}: {META_FILE} is missing (write one with save())")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise InvalidInput(f"{path} must hold a JSON object")
    if meta.get("format") != FORMAT:
        raise InvalidInput(f"{path} has format {meta.get('format')!r}; this version reads {FORMAT}")
    if meta.get("kind") not in _KINDS:
        raise InvalidInput(f"{path} names an unknown index kind {meta.get('kind')!r}")
    if not isinstance(meta.get("params"), dict):
        raise InvalidInput(f"{path} has no params object")
    for key in ("size", "dim"):
        if isinstance(meta.get(key), bool) or not isinstance(meta.get(key), int):
            raise InvalidInput(f"{path} has no integer {key}")
    return meta


def _fsync(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
