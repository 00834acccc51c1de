"""Image-search benchmark: embedding throughput, index build and recall, retrieval quality, and
search latency through the gateway, for ``modelyard.apps.image_search``.

The catalog: the first ``--emoji`` Twemoji graphics of ``emoji_catalog()`` (72x72 PNGs, in
emoji-data's order, so whole subcategories come first) and the near-duplicate photo set of
``near_duplicate_set(seed=0)`` (the photos bundled with scikit-image and scikit-learn,
shorter side 256 px, each with its default 10 augmented JPEG copies), mixed in a fixed
shuffled order. The query images of the photo set (``--queries-per-photo`` further augmented
copies of each photo) stay out of the catalog.

1. Embedding throughput, ``--batch-size`` images per batch (default 32), every catalog image
   once per row. Rows, each on the same batches, in rotating order batch after batch (a first
   batch through every row is an untimed warm-up):

   - ``embed() from bytes``: ``decode_image`` on the file's bytes, then ``Embedder.embed`` on the
     decoded images (preprocess, forward, pool, normalise): what the pipeline and the runtime do;
   - ``embed() from PIL``: ``Embedder.embed`` on images decoded beforehand;
   - ``forward_features``: the bare network (with its pooling and normalisation) on the batch
     ``preprocess`` made beforehand; on a GPU the batch is moved to it beforehand too;
   - references: ``decode_image`` alone (timed inside the first row) and ``preprocess`` alone.

   Figures are the median over the full batches of images / second; the ratio is
   ``embed() from bytes`` / ``forward_features``, goal >= 0.8x (the pipeline around the model
   must not be the bottleneck). The same again on the GPU when ``torch.cuda.is_available()``.
   The vectors of the first row are the catalog's embeddings for parts 2 and 3.
2. Indexes (``build_index``): build time (median of 5 builds below 10k vectors, else one) and
   the latency of single-vector searches, for exact, HNSW and IVF-PQ with the library's
   defaults, on the catalog's embeddings and on a synthetic set (``--synthetic`` random unit
   vectors of dim 1280, default 50,000: no structure at all, a worst case for every approximate
   index); recall@10 of each against exact search (``recall_at_k``, 500 sampled rows as queries).
   HNSW and IVF-PQ get a second row after ``tune_recall`` (target 0.95), which the pipeline
   applies before it publishes: the knob it chose (efSearch, nprobe), the recall on the sample it
   tuned on and on 500 other rows (held out), and the search time it costs against exact search.
   Goal: held-out recall@10 >= 0.95 for tuned HNSW.
3. Retrieval quality with exact search over the whole catalog (and tuned HNSW for the photos):
   - near-duplicates: each query image's relevant items are its photo's original and copies
     (11 items). The goal (>= 0.95) is on precision@10 (hits in the top 10 / 10), as the issue
     words it; precision@R, R = min(number of relevant items, 10) (R-precision, equal to P@10
     here) and recall@10 are printed as well. A set with fewer than 10 relevant items per query
     (``near_duplicate_set(copies=...)`` below 9) caps P@10 below 1, and the goal line says so;
   - emoji subcategories: every emoji of the catalog is a query (its own catalog vector); the
     relevant items are the other emoji of its subcategory; the query itself is dropped from its
     results. Queries whose subcategory has no other member are left out. Skin-tone variants make
     this easy (a hand's five tones share its subcategory), so it is printed again with them
     removed from the catalog and the queries. No goal is set for it.
4. Search latency: ``python -m modelyard up`` on a temporary home; the catalog pushed as a
   dataset, the ``image_index`` pipeline registered and run, its index deployed (one replica);
   then ``--requests`` sequential requests of each kind on one keep-alive connection, image and
   id queries alternating: ``POST /bench/search/search?k=10`` with a multipart JPEG (the photo
   queries and augmented emoji, in turn) and with JSON ``{"id": ..., "k": 10}``. The same
   straight to the replica (the gateway's share), and image and id queries at
   ``--concurrency`` (default 4, one connection per worker, 0 skips). ``took`` is the time the
   runtime itself reports.

The machine is shared: the load average is printed at the start and the end, and each part
prints the CPU it used and what other processes used meanwhile. Timings are printed, never
asserted.

Run it (about 20 minutes on 2 busy cores with the defaults, 11 of them building the synthetic
indexes; ``--quick`` takes 3 to 4)::

    .venv/bin/python bench/image_search.py
    .venv/bin/python bench/image_search.py --quick
    .venv/bin/python bench/image_search.py --emoji 0 --synthetic 100000   # every emoji
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from _harness import (
    CLOCK_TICKS,
    UP,
    Ident,
    argument_parser,
    ident,
    launch,
    load_average,
    machine_busy,
    machine_line,
    percentile,
    platform_env,
    proc_stat,
    process_label,
    process_tree,
    stop_tree,
    verdict,
    wait_until,
)

NAMESPACE = "bench"
DEPLOYMENT = "search"
THROUGHPUT_GOAL = 0.8
RECALL_GOAL = 0.95
PRECISION_GOAL = 0.95
K = 10
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 3600.0
DEPLOY_TIMEOUT_S = 600.0
STOP_GRACE_S = 30.0
SKIN_TONES = ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")


# machine and CPU accounting --------------------------------------------------------------------
def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def process_cpu(pid: int, *, reaped: bool = True) -> float:
    """CPU seconds of a process (plus the children it reaped, when ``reaped``)."""
    fields = proc_stat(pid)
    if fields is None:
        return 0.0
    last = 15 if reaped else 13
    return sum(int(value) for value in fields[11:last]) / CLOCK_TICKS


def busy_processes(seconds: float = 1.0, skip: Sequence[int] = ()) -> list[tuple[str, float]]:
    """The other processes that used CPU over ``seconds``: (label, cores), busiest first."""
    before = {pid: process_cpu(pid, reaped=False) for pid in all_pids()}
    time.sleep(seconds)
    busy: dict[str, float] = {}
    for pid, start in before.items():
        if pid in skip:
            continue
        used = process_cpu(pid, reaped=False) - start
        if used > 0:
            label = process_label(pid)
            busy[label] = busy.get(label, 0.0) + used / seconds
    ranked = sorted(busy.items(), key=lambda item: -item[1])
    return [(label, cores) for label, cores in ranked[:4] if cores >= 0.05]


@dataclass
class CpuMeter:
    """CPU used over a stretch of time: by this process, by a process tree, by the machine."""

    tree_root: int | None = None
    began: float = 0.0
    own: float = 0.0
    tree: float = 0.0
    busy: tuple[int, int] = (0, 0)

    def start(self) -> CpuMeter:
        self.began = time.monotonic()
        self.own = time.process_time()
        self.tree = self._tree_cpu()
        self.busy = machine_busy()
        return self

    def _tree_cpu(self) -> float:
        if self.tree_root is None:
            return 0.0
        return sum(process_cpu(pid) for pid in process_tree(self.tree_root))

    def report(self) -> str:
        wall = max(time.monotonic() - self.began, 1e-9)
        own = (time.process_time() - self.own) / wall
        tree = (self._tree_cpu() - self.tree) / wall
        busy1, total1 = machine_busy()
        cpus = os.cpu_count() or 1
        machine = (busy1 - self.busy[0]) / max(total1 - self.busy[1], 1) * cpus
        other = max(0.0, machine - own - tree)
        platform_part = f", platform processes {tree:.2f}" if self.tree_root is not None else ""
        return (
            f"CPU over {wall:.0f} s, in cores of {cpus}: this benchmark {own:.2f}{platform_part}, "
            f"other processes {other:.2f} (load average now {load_average()})"
        )


# the catalog -----------------------------------------------------------------------------------
@dataclass
class Catalog:
    items: list[Any]  # modelyard.apps.image_search.Item, in the benchmark's order
    data: list[bytes]  # each item's file bytes
    queries: list[tuple[bytes, str]]  # near-duplicate query JPEGs and their photo's name
    photos: int
    originals: int
    emoji: int


def build_catalog(work: Path, emoji: int, queries_per_photo: int) -> Catalog:
    from modelyard.apps.image_search import emoji_catalog, near_duplicate_set

    photo_items, queries = near_duplicate_set(
        work / "photos", seed=0, queries_per_photo=queries_per_photo
    )
    emoji_items = emoji_catalog(limit=emoji or None)
    items = [*emoji_items, *photo_items]
    random.Random(0).shuffle(items)  # every batch mixes emoji and photos
    by_id = {item.id: item for item in photo_items}
    return Catalog(
        items,
        [item.path.read_bytes() for item in items],
        [(path.read_bytes(), by_id[original].subcategory) for path, original in queries],
        len(photo_items),
        sum(1 for item in photo_items if "-copy" not in item.id),
        len(emoji_items),
    )


# 1. embedding throughput -----------------------------------------------------------------------
ROWS = ("embed() from bytes", "embed() from PIL", "forward_features")


@dataclass
class Throughput:
    device: str
    batches: int
    images: int
    seconds: dict[str, list[float]] = field(default_factory=dict)  # row: per full batch
    sizes: list[int] = field(default_factory=list)
    vectors: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def per_second(self, row: str) -> float:
        return statistics.median(n / s for n, s in zip(self.sizes, self.seconds[row], strict=True))

    def ms_per_image(self, row: str) -> float:
        return statistics.median(
            s / n * 1000 for n, s in zip(self.sizes, self.seconds[row], strict=True)
        )


def measure_throughput(embedder: Any, catalog: Catalog, batch_size: int) -> Throughput:
    import torch

    from modelyard.apps.image_search import decode_image

    device = str(embedder.device)
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    starts = range(0, len(catalog.data), batch_size)
    batches = [catalog.data[start : start + batch_size] for start in starts]
    # inputs of the later rows, made before any timing
    decoded = [[decode_image(data) for data in batch] for batch in batches]
    tensors = [embedder.preprocess(images) for images in decoded]
    if cuda:
        tensors = [tensor.to(embedder.device) for tensor in tensors]
    full = [i for i, batch in enumerate(batches) if len(batch) == batch_size] or [0]
    result = Throughput(device, len(full), len(catalog.data))
    names = (*ROWS, "decode_image", "preprocess")
    result.seconds = {name: [] for name in names}
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in ROWS}

    def run(row: str, index: int) -> tuple[np.ndarray, float, float]:
        sync()
        began = time.perf_counter()
        decode_s = 0.0
        if row == ROWS[0]:
            images = [decode_image(data) for data in batches[index]]
            decode_s = time.perf_counter() - began
            vectors = embedder.embed(images)
        elif row == ROWS[1]:
            vectors = embedder.embed(decoded[index])
        else:
            vectors = embedder.forward_features(tensors[index])
        sync()
        return vectors, time.perf_counter() - began, decode_s

    for row in ROWS:  # warm-up: the first batch once through every row
        run(row, 0)
    embedder.preprocess(decoded[0])
    for index in range(len(batches)):
        shift = index % len(ROWS)
        for row in ROWS[shift:] + ROWS[:shift]:
            vectors, seconds, decode_s = run(row, index)
            outputs[row].append(vectors)
            if index in full:
                result.seconds[row].append(seconds)
                if row == ROWS[0]:
                    result.seconds["decode_image"].append(decode_s)
        if index in full:
            began = time.perf_counter()
            embedder.preprocess(decoded[index])
            result.seconds["preprocess"].append(time.perf_counter() - began)
            result.sizes.append(len(batches[index]))
    stacked = {row: np.concatenate(outputs[row]) for row in ROWS}
    result.vectors = stacked[ROWS[0]]
    for row in ROWS[1:]:
        deviation = float(np.abs(stacked[row] - result.vectors).max())
        result.notes.append(f"max |difference| of the vectors, {row} vs {ROWS[0]}: {deviation:.2e}")
    return result


def print_throughput(result: Throughput, batch_size: int) -> float:
    print(
        f"  {result.images} images in batches of {batch_size}; median over the "
        f"{result.batches} full batches"
    )
    print(f"  {'':34s} {'images/s':>9s} {'ms/image':>9s}")
    for row in (*ROWS, "decode_image", "preprocess"):
        label = row if row in ROWS else f"  ref: {row} alone"
        print(f"  {label:34s} {result.per_second(row):9.1f} {result.ms_per_image(row):9.2f}")
    ratio = result.per_second(ROWS[0]) / result.per_second(ROWS[2])
    pil = result.per_second(ROWS[1]) / result.per_second(ROWS[2])
    print(
        f"  ratio embed() from bytes / forward_features: {ratio:.2f}x   goal >= "
        f"{THROUGHPUT_GOAL:.1f}x  {verdict(ratio >= THROUGHPUT_GOAL)}   "
        f"(embed() from PIL / forward_features: {pil:.2f}x)"
    )
    for note in result.notes:
        print(f"  {note}")
    return ratio


def embed_bytes(embedder: Any, blobs: Sequence[bytes]) -> np.ndarray:
    from modelyard.apps.image_search import decode_image

    vectors: np.ndarray = embedder.embed([decode_image(data) for data in blobs])
    return vectors


# 2. indexes ------------------------------------------------------------------------------------
@dataclass
class IndexRow:
    label: str
    kind: str  # "exact", "hnsw", "ivfpq" with the library's defaults; "hnsw tuned" after tuning
    build_s: float | None  # build time; for a tuned row, the time tune_recall took
    recall: float | None  # recall@10 on the sample tune_recall uses (seed 0)
    held_out: float | None  # recall@10 on another sample of 500 rows (seed 1)
    search_us: float | None
    params: dict[str, Any]
    knob: str = ""  # "efSearch=512" on a tuned row
    reached: bool | None = None  # a tuned row: whether tune_recall reached the target
    error: str = ""
    warnings: list[str] = field(default_factory=list)  # what faiss printed while building


@contextlib.contextmanager
def captured_stderr(into: list[str]) -> Iterator[None]:
    """Collect what is written to file descriptor 2 (faiss warns from C++, straight to it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            into.extend(sink.read().decode(errors="replace").splitlines())


def index_rows(label: str, vectors: np.ndarray, kinds: Sequence[str]) -> list[IndexRow]:
    """A row per kind with the library's defaults and, for the approximate kinds, a row after
    ``tune_recall`` (target 0.95), as the pipeline publishes them."""
    from modelyard.apps.image_search import build_index, recall_at_k, tune_recall
    from modelyard.errors import ModelyardError

    rows = []
    repeats = 5 if len(vectors) < 10_000 else 1
    queries = vectors[np.random.default_rng(1).choice(len(vectors), min(200, len(vectors)))]

    def measure(index: Any) -> tuple[float, float, float]:
        recall = recall_at_k(index, vectors, k=K, sample=500, seed=0)
        held_out = recall_at_k(index, vectors, k=K, sample=500, seed=1)
        index.search(queries[:1], K)
        latencies = []
        for query in queries:
            began = time.perf_counter()
            index.search(query[None, :], K)
            latencies.append(time.perf_counter() - began)
        return recall, held_out, statistics.median(latencies) * 1e6

    for kind in kinds:
        warnings: list[str] = []
        try:
            times = []
            for _ in range(repeats):
                with captured_stderr(warnings):
                    began = time.perf_counter()
                    index = build_index(vectors, kind)
                    times.append(time.perf_counter() - began)
            params = dict(index.params)
            recall, held_out, search_us = measure(index)
            build_s = statistics.median(times)
            row = IndexRow(label, kind, build_s, recall, held_out, search_us, params)
            row.warnings = warnings
            rows.append(row)
            if index.knob is None:
                continue
            began = time.perf_counter()
            tuning = tune_recall(index, vectors, target=RECALL_GOAL, k=K, sample=500, seed=0)
            tune_s = time.perf_counter() - began
            recall, held_out, search_us = measure(index)
            assert recall == tuning.recall
            steps = " ".join(f"{value}:{got:.3f}" for value, got in tuning.tried)
            rows.append(
                IndexRow(
                    label,
                    f"{kind} tuned",
                    tune_s,
                    recall,
                    held_out,
                    search_us,
                    {"tried": steps},
                    knob=f"{tuning.knob}={tuning.value}",
                    reached=tuning.reached,
                )
            )
        except (ModelyardError, RuntimeError, MemoryError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            rows.append(IndexRow(label, kind, None, None, None, None, {}, error=error))
            rows[-1].warnings = warnings
    return rows


def print_index_rows(rows: Sequence[IndexRow]) -> None:
    print(
        f"  {'vectors':40s} {'kind':11s} {'build s':>8s} {'knob':>14s} {'recall@10':>9s} "
        f"{'held-out':>8s} {'search us':>9s} {'x exact':>7s}  params"
    )
    exact = {row.label: row.search_us for row in rows if row.kind == "exact" and row.search_us}
    for row in rows:
        if row.error:
            print(f"  {row.label:40s} {row.kind:11s} FAILED: {row.error[:160]}")
            continue
        assert row.build_s is not None and row.recall is not None and row.search_us is not None
        assert row.held_out is not None
        goal = ""
        if row.kind == "hnsw tuned":
            passed = row.held_out >= RECALL_GOAL
            goal = f"   goal held-out >= {RECALL_GOAL:.2f}  {verdict(passed)}"
        elif row.reached is not None:
            goal = "   target reached" if row.reached else "   target NOT reached at the limit"
        ratio = f"{row.search_us / exact[row.label]:7.2f}" if row.label in exact else f"{'':7s}"
        params = json.dumps(row.params, sort_keys=True)
        print(
            f"  {row.label:40s} {row.kind:11s} {row.build_s:8.3f} {row.knob:>14s} "
            f"{row.recall:9.3f} {row.held_out:8.3f} {row.search_us:9.0f} {ratio}  {params}{goal}"
        )
    print(
        "  build s: median of 5 builds below 10k vectors, else one (tuned rows: the time "
        f"tune_recall took to reach recall {RECALL_GOAL} or its limit, doubling the knob); "
        "recall@10 against exact search on 500 sampled rows as queries (each finds itself): "
        "the sample tune_recall tunes on (seed 0), held-out: 500 others (seed 1); search us: "
        "median of 200 single-vector searches; x exact: that / exact search's on the same vectors"
    )
    for row in rows:
        if row.warnings:
            print(
                f"  faiss printed {len(row.warnings)} line(s) while building {row.kind} on "
                f"{row.label}, e.g.: {row.warnings[0].strip()[:150]}"
            )


def tuned_hnsw(vectors: np.ndarray) -> Any:
    """An HNSW index as the pipeline publishes it: defaults, then `tune_recall` to 0.95."""
    from modelyard.apps.image_search import build_index, tune_recall

    index = build_index(vectors, "hnsw")
    tune_recall(index, vectors, target=RECALL_GOAL, k=K)
    return index


def synthetic_vectors(n: int, dim: int = 1280) -> np.ndarray:
    rows = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


# 3. retrieval quality --------------------------------------------------------------------------
@dataclass
class Quality:
    label: str
    queries: int
    left_out: int
    relevant: float  # mean number of relevant items per query
    fewest: int  # relevant items of the query with the fewest
    precision_at_r: float
    precision_at_10: float
    recall_at_10: float


def grade(
    label: str, found: np.ndarray, relevant: Sequence[set[int]], left_out: int = 0
) -> Quality:
    """Precision and recall of each result row ``found[i]`` (positions, best first)."""
    at_r, at_10, rec = [], [], []
    for row, wanted in zip(found, relevant, strict=True):
        top = [int(p) for p in row[:K] if p >= 0]
        r = min(len(wanted), K)
        at_r.append(len(set(top[:r]) & wanted) / r)
        at_10.append(len(set(top) & wanted) / K)
        rec.append(len(set(top) & wanted) / len(wanted))
    return Quality(
        label,
        len(relevant),
        left_out,
        statistics.mean(len(w) for w in relevant),
        min(len(w) for w in relevant),
        statistics.mean(at_r),
        statistics.mean(at_10),
        statistics.mean(rec),
    )


def near_duplicate_quality(
    label: str, index: Any, items: Sequence[Any], query_vectors: np.ndarray, groups: Sequence[str]
) -> Quality:
    members: dict[str, set[int]] = {}
    for position, item in enumerate(items):
        if item.category == "photo":
            members.setdefault(item.subcategory, set()).add(position)
    _, found = index.search(query_vectors, K)
    return grade(label, found, [members[group] for group in groups])


def subcategory_quality(label: str, vectors: np.ndarray, items: Sequence[Any]) -> Quality:
    """Every emoji of ``items`` as a query against ``vectors`` (exact), itself dropped."""
    from modelyard.apps.image_search import build_index

    index = build_index(vectors, "exact")
    members: dict[str, set[int]] = {}
    for position, item in enumerate(items):
        if item.category != "photo":
            members.setdefault(item.subcategory, set()).add(position)
    queries = [
        p
        for p, item in enumerate(items)
        if item.category != "photo" and len(members[item.subcategory]) > 1
    ]
    _, found = index.search(vectors[queries], K + 1)
    rows = np.array(
        [[p for p in row if p != query][:K] for query, row in zip(queries, found, strict=True)]
    )
    relevant = [members[items[q].subcategory] - {q} for q in queries]
    emoji = sum(1 for item in items if item.category != "photo")
    return grade(label, rows, relevant, left_out=emoji - len(queries))


def print_quality(rows: Sequence[Quality], goal: bool) -> None:
    print(f"  {'':56s} {'queries':>7s} {'rel/q':>6s} {'P@R':>6s} {'P@10':>6s} {'R@10':>6s}")
    for row in rows:
        tail = ""
        if goal:
            passed = row.precision_at_10 >= PRECISION_GOAL
            tail = f"   goal P@10 >= {PRECISION_GOAL:.2f}  {verdict(passed)}"
        left = f" ({row.left_out} left out)" if row.left_out else ""
        print(
            f"  {row.label:56s} {row.queries:7d} {row.relevant:6.1f} {row.precision_at_r:6.3f} "
            f"{row.precision_at_10:6.3f} {row.recall_at_10:6.3f}{tail}{left}"
        )


# 4. the platform -------------------------------------------------------------------------------
@dataclass
class Platform:
    process: subprocess.Popen[bytes]
    log_path: Path
    home: Path
    api_port: int
    gateway_port: int
    seen: set[Ident] = field(default_factory=set)
    name: str = "modelyard up"

    def note_tree(self) -> None:
        self.seen |= {i for pid in process_tree(self.process.pid) if (i := ident(pid))}

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])

    def stop(self) -> None:
        """SIGTERM to ``up``, which stops its gateway and replicas; whatever of its tree is still
        there after it exited (or after a grace) gets SIGTERM, then SIGKILL."""
        self.note_tree()
        stop_tree(self.process, self.name, STOP_GRACE_S, self.seen)


def start_platform(work: Path) -> Platform:
    home = work / "home"
    home.mkdir()
    started = platform_env(home)
    log_path = work / "platform.log"
    with open(log_path, "wb") as log:
        process = launch(UP, started.env, log)
    return Platform(process, log_path, home, started.api_port, started.gateway_port)


def http_ok(port: int, path: str) -> Callable[[], bool]:
    def check() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        finally:
            conn.close()

    return check


@dataclass
class Request:
    kind: str  # "image" | "id"
    path: str
    body: bytes
    content_type: str
    expect: str  # the photo's name (image) or the item id (id) the top results should hold


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "modelyard-bench-image-search"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="query.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def build_requests(catalog: Catalog, prefix: str) -> tuple[list[Request], list[Request]]:
    """Image queries (photo queries and augmented emoji, alternating) and id queries."""
    from PIL import Image

    from modelyard.apps.image_search import augment

    rng = np.random.default_rng(7)
    emoji = [item for item in catalog.items if item.category != "photo"]
    augmented = []
    for item in emoji[:: max(1, len(emoji) // 40)][:40]:
        with Image.open(item.path) as source:
            image = augment(source.convert("RGBA"), rng)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        augmented.append((buffer.getvalue(), item.id))
    mixed = [q for pair in zip(catalog.queries, augmented, strict=False) for q in pair]
    mixed += catalog.queries[len(augmented) :] + augmented[len(catalog.queries) :]
    images = []
    for data, expect in mixed:
        body, kind = multipart(data)
        images.append(Request("image", f"{prefix}/search?k={K}", body, kind, expect))
    ids = [
        Request(
            "id",
            f"{prefix}/search",
            json.dumps({"id": item.id, "k": K}).encode(),
            "application/json",
            item.id,
        )
        for item in catalog.items
    ]
    random.Random(1).shuffle(ids)
    return images, ids


@dataclass
class Answer:
    latency: float
    status: int
    took_ms: float | None
    hit: bool | None  # top-1 is the expected item (id) / of the expected photo or emoji (image)
    error: str = ""


def send(conn: http.client.HTTPConnection, request: Request, headers: dict[str, str]) -> Answer:
    began = time.perf_counter()
    conn.request(
        "POST",
        request.path,
        body=request.body,
        headers={**headers, "Content-Type": request.content_type},
    )
    response = conn.getresponse()
    body = response.read()
    latency = time.perf_counter() - began
    if response.status != 200:
        return Answer(latency, response.status, None, None, body[:300].decode(errors="replace"))
    answer = json.loads(body)
    results = answer.get("results") or [{}]
    top = results[0]
    expect = request.expect
    if request.kind == "id" or expect.startswith("emoji-"):
        hit = top.get("id") == expect
    else:
        hit = top.get("category") == "photo" and top.get("subcategory") == expect
    return Answer(latency, 200, answer.get("took_ms"), hit)


def sequential(
    port: int, requests: Sequence[Sequence[Request]], count: int, headers: dict[str, str]
) -> dict[str, list[Answer]]:
    """``count`` requests of each list, taking one of each in turn, on one connection."""
    answers: dict[str, list[Answer]] = {r[0].kind: [] for r in requests}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for number in range(count):
            for kind in requests:
                request = kind[number % len(kind)]
                try:
                    answers[request.kind].append(send(conn, request, headers))
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    answers[request.kind].append(Answer(0.0, 0, None, None, repr(exc)))
    finally:
        conn.close()
    return answers


def concurrent(
    port: int, requests: Sequence[Request], count: int, workers: int, headers: dict[str, str]
) -> tuple[list[Answer], float]:
    """``count`` requests spread over ``workers`` threads, each with its own connection."""
    answers: list[Answer] = []
    lock = threading.Lock()
    todo = iter(range(count))

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                with lock:
                    number = next(todo, None)
                if number is None:
                    return
                try:
                    answer = send(conn, requests[number % len(requests)], headers)
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    answer = Answer(0.0, 0, None, None, repr(exc))
                with lock:
                    answers.append(answer)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, time.perf_counter() - began


def latency_line(label: str, answers: Sequence[Answer], wall: float | None = None) -> str:
    good = sorted(a.latency * 1000 for a in answers if a.status == 200)
    errors = Counter(
        f"HTTP {a.status}" if a.status else "connection" for a in answers if a.status != 200
    )
    if not good:
        return f"  {label:42s} no answer: {dict(errors)}"
    took = sorted(a.took_ms for a in answers if a.took_ms is not None)
    hits = [a.hit for a in answers if a.hit is not None]
    rate = f"{len(good) / wall:7.1f}" if wall else f"{len(good) / (sum(good) / 1000):7.1f}"
    line = (
        f"  {label:42s} {len(good):5d} {rate} {percentile(good, 0.5):8.2f} "
        f"{percentile(good, 0.99):8.2f} {good[-1]:8.1f} "
        f"{percentile(took, 0.5) if took else float('nan'):8.2f} "
        f"{sum(hits) / len(hits) if hits else float('nan'):6.3f}"
    )
    if errors:
        first = next(a.error for a in answers if a.status != 200)
        line += f"  errors {dict(errors)}: {first[:160]}"
    return line


def bench_gateway(work: Path, catalog: Catalog, args: argparse.Namespace) -> list[str]:
    """Part 4; returns notes on failures (also printed)."""
    from modelyard.apps.image_search import ATTRIBUTION, write_catalog
    from modelyard.apps.image_search.pipeline import image_index
    from modelyard.client import Client

    problems: list[str] = []
    platform_ = start_platform(work)
    meter: CpuMeter | None = None
    stage = "starting the platform"
    try:
        wait_until(
            "API health", http_ok(platform_.api_port, "/api/v1/health"), START_TIMEOUT_S, platform_
        )
        key_path = platform_.home / "admin.key"
        wait_until(
            "admin.key",
            lambda: bool(key_path.exists() and key_path.read_text().strip()),
            30,
            platform_,
        )
        key = key_path.read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        folder = write_catalog(catalog.items, work / "catalog", attribution=ATTRIBUTION)
        meter = CpuMeter(platform_.process.pid).start()
        url = f"http://127.0.0.1:{platform_.api_port}"
        with Client(url=url, api_key=key, cache_dir=work / "client-cache", timeout=120) as client:
            stage = "pushing the catalog"
            client.create_namespace(NAMESPACE)
            began = time.monotonic()
            dataset = client.push(f"{NAMESPACE}/catalog", folder, kind="dataset")
            pushed_s = time.monotonic() - began
            stage = "register_pipeline(image_index(...))"
            client.register_pipeline(NAMESPACE, image_index(f"{NAMESPACE}/image-index"))
            stage = "running the pipeline"
            params = {"catalog": f"{NAMESPACE}/catalog@latest", "cache": str(work / "emb")}
            began = time.monotonic()
            run = client.run_pipeline(NAMESPACE, "image-index", params)
            run = client.wait_run(NAMESPACE, run.id, timeout=RUN_TIMEOUT_S)
            run_s = time.monotonic() - began
            logs = list(client.run_logs(NAMESPACE, run.id))
            print(
                f"  dataset {NAMESPACE}/catalog v{dataset.number} ({len(catalog.items)} images, "
                f"{dataset.size_bytes / 1e6:.1f} MB) pushed in {pushed_s:.1f} s; pipeline run "
                f"{run.state} in {run_s:.1f} s",
                flush=True,
            )
            for step in run.steps:
                took = (
                    f"{(step.finished_at - step.started_at).total_seconds():.1f} s"
                    if step.started_at and step.finished_at
                    else "?"
                )
                print(f"    step {step.node}: {step.state} in {took}")
            for line in logs:
                if "recall@10" in line or line.startswith("skipped") or "Error" in line:
                    print(f"    log: {line.strip()[:200]}")
            if run.state != "succeeded":
                raise RuntimeError(
                    f"pipeline run {run.id} {run.state}: {run.reason}; last log lines: "
                    + " | ".join(line.strip() for line in logs[-8:])
                )
            stage = "deploying the index"
            latest = client.get_version(f"{NAMESPACE}/image-index@latest")
            began = time.monotonic()
            client.create_deployment(NAMESPACE, DEPLOYMENT, "image-index@latest", timeout_s=120)
            deployment = client.wait_deployment(
                NAMESPACE, DEPLOYMENT, version=latest.number, timeout=DEPLOY_TIMEOUT_S
            )
            deploy_s = time.monotonic() - began
            platform_.note_tree()
            replicas = [
                r for rev in deployment.revisions for r in rev.replicas if r.state == "ready"
            ]
            print(
                f"  model {NAMESPACE}/image-index v{latest.number} deployed in {deploy_s:.1f} s "
                f"({len(replicas)} ready replica(s)); {meter.report()}",
                flush=True,
            )
        stage = "sending requests"
        prefix = f"/{NAMESPACE}/{DEPLOYMENT}"
        images, ids = build_requests(catalog, prefix)
        targets = [("gateway", platform_.gateway_port, prefix)]
        if replicas:
            host_port = replicas[0].url.split("://", 1)[1].split("/", 1)[0]
            targets.append(("straight to the replica", int(host_port.rsplit(":", 1)[1]), ""))
        meter = CpuMeter(platform_.process.pid).start()
        print(
            f"\n  {'':42s} {'OK':>5s} {'req/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s} "
            f"{'took ms':>8s} {'top-1':>6s}"
        )
        for label, port, base in targets:
            image_requests = [with_prefix(r, prefix, base) for r in images]
            id_requests = [with_prefix(r, prefix, base) for r in ids]
            sequential(port, [image_requests, id_requests], args.warmup_requests, headers)
            count = args.requests if label == "gateway" else max(1, args.requests // 2)
            answers = sequential(port, [image_requests, id_requests], count, headers)
            print(latency_line(f"image query, {label}, c=1", answers["image"]), flush=True)
            print(latency_line(f"id query, {label}, c=1", answers["id"]), flush=True)
            for kind, kind_answers in answers.items():
                if any(a.status != 200 for a in kind_answers):
                    problems.append(f"{kind} queries ({label}) had errors")
        if args.concurrency > 0:
            port = platform_.gateway_port
            for kind, requests in (("image", images), ("id", ids)):
                together, wall = concurrent(
                    port, requests, args.requests, args.concurrency, headers
                )
                label = f"{kind} query, gateway, c={args.concurrency}"
                print(latency_line(label, together, wall), flush=True)
                if any(a.status != 200 for a in together):
                    problems.append(f"{kind} queries (gateway, c={args.concurrency}) had errors")
        print(
            "  columns: OK answers; req/s (c=1: 1 / mean latency; c>1: answers / wall time); p50, "
            "p99, max of the client's latency; took ms: p50 of the time the runtime reports for "
            "itself; top-1: share whose first result is the query's item (id), its photo's "
            "group (photo queries) or its emoji (augmented emoji)"
        )
        print(f"  {meter.report()}")
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        problem = (
            f"gateway part failed while {stage}: {type(exc).__name__}: {exc} "
            f"(raised at {where.filename}:{where.lineno})"
        )
        problems.append(problem.splitlines()[0])
        print(f"  FAILED: {problem}\n  platform log tail:\n{platform_.log_tail()}", flush=True)
    finally:
        platform_.stop()
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            (args.keep_logs / "platform.log").write_bytes(platform_.log_path.read_bytes())
    return problems


def with_prefix(request: Request, prefix: str, base: str) -> Request:
    if prefix == base:
        return request
    return Request(
        request.kind,
        base + request.path[len(prefix) :],
        request.body,
        request.content_type,
        request.expect,
    )


# main ------------------------------------------------------------------------------------------
DEFAULTS = {"emoji": 320, "queries_per_photo": 5, "synthetic": 50_000, "requests": 200}
QUICK = {"emoji": 96, "queries_per_photo": 2, "synthetic": 10_000, "requests": 40}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--emoji", type=int, help="emoji in the catalog (320; 0: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (32)")
    parser.add_argument(
        "--queries-per-photo", type=int, help="near-duplicate queries per photo (5)"
    )
    parser.add_argument("--synthetic", type=int, help="synthetic vectors (50000; 0 skips)")
    parser.add_argument("--requests", type=int, help="requests per kind (200)")
    parser.add_argument("--warmup-requests", type=int, default=10, help="untimed, per kind (10)")
    parser.add_argument("--concurrency", type=int, default=4, help="workers for c>1 (4; 0 skips)")
    parser.add_argument("--no-gateway", action="store_true", help="skip part 4")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU rows")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="defaults for a short run: --emoji 96 --queries-per-photo 2 --synthetic 10000 "
        "--requests 40 (flags given as well win)",
    )
    parser.add_argument("--keep-logs", type=Path, help="copy the platform's log to this folder")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.emoji < 0 or args.batch_size < 1 or args.requests < 1 or args.queries_per_photo < 1:
        parser.error("--emoji >= 0, --batch-size, --requests and --queries-per-photo >= 1")
    if args.synthetic < 0 or args.concurrency < 0 or args.warmup_requests < 0:
        parser.error("--synthetic, --concurrency and --warmup-requests must be >= 0")
    return args


def stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the platform


def versions() -> str:
    import faiss
    import torch

    names = ("modelyard", "torch", "faiss-cpu", "pillow", "efficientnet-lite-pytorch")
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    threads = f"torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()}"
    return f"{', '.join(found)}; threads: {threads}"


def benchmark(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    started = dt.datetime.now(dt.UTC)
    print(
        "image-search benchmark: embedding throughput, index build and recall, retrieval "
        "quality, search latency through the gateway"
    )
    print(f"machine: {machine_line()}; started {started:%Y-%m-%d %H:%M} UTC")
    print(f"versions: {versions()}")
    print(f"load average at start: {load_average()}")
    others = busy_processes(1.0, skip=[os.getpid()])
    shown = ", ".join(f"{label} {cores:.2f}" for label, cores in others) or "none"
    print(f"other processes using CPU at start (cores, over 1 s): {shown}", flush=True)
    goals: list[str] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-image-search-") as temp:
        work = Path(temp)
        import torch

        from modelyard.apps.image_search import build_index, load_embedder

        catalog = build_catalog(work, args.emoji, args.queries_per_photo)
        print(
            f"catalog: {len(catalog.items)} images = {catalog.emoji} emoji (72x72 PNG) + "
            f"{catalog.photos} photos ({catalog.originals} originals, PNG, + "
            f"{catalog.photos // catalog.originals - 1} JPEG copies each); "
            f"{len(catalog.queries)} near-duplicate query JPEGs kept out of it",
            flush=True,
        )

        # 1 ---------------------------------------------------------------------------------
        print(
            f"\n[1] embedding throughput, CPU (torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op threads)",
            flush=True,
        )
        meter = CpuMeter().start()
        embedder = load_embedder(device="cpu", batch_size=args.batch_size)
        print(f"  embedder: {embedder!r}")
        cpu = measure_throughput(embedder, catalog, args.batch_size)
        ratio = print_throughput(cpu, args.batch_size)
        goals.append(
            f"embedding throughput, CPU: embed() from bytes / forward_features {ratio:.2f}x "
            f"(goal >= {THROUGHPUT_GOAL:.1f}x) {verdict(ratio >= THROUGHPUT_GOAL)}"
        )
        print(f"  {meter.report()}", flush=True)
        assert cpu.vectors is not None
        vectors = cpu.vectors
        query_vectors = embed_bytes(embedder, [data for data, _ in catalog.queries])
        if torch.cuda.is_available() and not args.no_gpu:
            name = torch.cuda.get_device_name(0)
            print(f"\n[1] embedding throughput, GPU ({name})", flush=True)
            meter = CpuMeter().start()
            gpu_embedder = load_embedder(device="cuda", batch_size=args.batch_size)
            gpu = measure_throughput(gpu_embedder, catalog, args.batch_size)
            ratio = print_throughput(gpu, args.batch_size)
            assert gpu.vectors is not None
            cosine = float((gpu.vectors * vectors).sum(axis=1).min())
            print(f"  lowest cosine between a GPU and a CPU vector of the same image: {cosine:.5f}")
            goals.append(
                f"embedding throughput, GPU: embed() from bytes / forward_features {ratio:.2f}x "
                f"(goal >= {THROUGHPUT_GOAL:.1f}x) {verdict(ratio >= THROUGHPUT_GOAL)}"
            )
            print(f"  {meter.report()}", flush=True)
            del gpu_embedder
        else:
            print("\n[1] GPU: torch sees no CUDA device (or --no-gpu): no GPU rows")

        # 2 ---------------------------------------------------------------------------------
        print("\n[2] indexes", flush=True)
        meter = CpuMeter().start()
        rows = index_rows(
            f"catalog embeddings ({len(vectors)} x {vectors.shape[1]})",
            vectors,
            ("exact", "hnsw", "ivfpq"),
        )
        if args.synthetic:
            synthetic = synthetic_vectors(args.synthetic)
            rows += index_rows(
                f"SYNTHETIC random unit ({len(synthetic)} x {synthetic.shape[1]})",
                synthetic,
                ("exact", "hnsw", "ivfpq"),
            )
            del synthetic
        print_index_rows(rows)
        for row in rows:
            if row.kind == "hnsw tuned" and row.held_out is not None:
                goals.append(
                    f"HNSW recall@10 after tune_recall ({row.knob}), {row.label}: held-out "
                    f"{row.held_out:.3f}, tuned sample {row.recall:.3f} (goal >= "
                    f"{RECALL_GOAL:.2f}) {verdict(row.held_out >= RECALL_GOAL)}"
                )
            if row.error:
                problems.append(f"build_index {row.kind} on {row.label}: {row.error}")
        print(f"  {meter.report()}", flush=True)

        # 3 ---------------------------------------------------------------------------------
        print(
            "\n[3] retrieval quality (top 10; P@R: precision in the top R, R = min(relevant, 10))"
        )
        groups = [group for _, group in catalog.queries]
        photo_positions = [p for p, item in enumerate(catalog.items) if item.category == "photo"]
        photo_items = [catalog.items[p] for p in photo_positions]
        near = [
            near_duplicate_quality(
                f"near-duplicates, photos only ({len(photo_items)} items), exact",
                build_index(vectors[photo_positions], "exact"),
                photo_items,
                query_vectors,
                groups,
            ),
            near_duplicate_quality(
                f"near-duplicates, whole catalog ({len(vectors)} items), exact",
                build_index(vectors, "exact"),
                catalog.items,
                query_vectors,
                groups,
            ),
            near_duplicate_quality(
                f"near-duplicates, whole catalog ({len(vectors)} items), hnsw tuned",
                tuned_hnsw(vectors),
                catalog.items,
                query_vectors,
                groups,
            ),
        ]
        print_quality(near, goal=True)
        for quality in near:
            passed = quality.precision_at_10 >= PRECISION_GOAL
            capped = (
                f" (capped at {quality.fewest / K:.1f}: a query has only {quality.fewest} "
                "relevant items)"
                if quality.fewest < K
                else ""
            )
            goals.append(
                f"precision@10, {quality.label}: {quality.precision_at_10:.3f} (goal >= "
                f"{PRECISION_GOAL:.2f}) {verdict(passed)}{capped}; precision@R (R = "
                f"{min(quality.fewest, K)}) {quality.precision_at_r:.3f}"
            )
        base = [
            p
            for p, item in enumerate(catalog.items)
            if not any(tone in item.id for tone in SKIN_TONES)
        ]
        emoji_rows = [
            subcategory_quality(
                f"emoji subcategories, whole catalog ({len(vectors)} items)",
                vectors,
                catalog.items,
            ),
            subcategory_quality(
                f"emoji subcategories, skin-tone variants removed ({len(base)})",
                vectors[base],
                [catalog.items[p] for p in base],
            ),
        ]
        print_quality(emoji_rows, goal=False)
        subcategories = len({i.subcategory for i in catalog.items if i.category != "photo"})
        print(
            f"  the emoji span {subcategories} subcategories; rel/q: mean relevant items per "
            "query; P@10 = hits in the top 10 / 10; R@10 = hits in the top 10 / relevant"
        )

        # 4 ---------------------------------------------------------------------------------
        if args.no_gateway:
            print("\n[4] search latency through the gateway: skipped (--no-gateway)")
        else:
            print("\n[4] search latency through the gateway (python -m modelyard up)", flush=True)
            problems += bench_gateway(work, catalog, args)

    print("\ngoals:")
    for line in goals:
        print(f"  {line}")
    for line in problems:
        print(f"problem: {line}")
    print(f"load average at end: {load_average()}")
    others = busy_processes(1.0, skip=[os.getpid()])
    shown = ", ".join(f"{label} {cores:.2f}" for label, cores in others) or "none"
    print(f"other processes using CPU at end (cores, over 1 s): {shown}")


def main(argv: Sequence[str] | None = None) -> None:
    benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
