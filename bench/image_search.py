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
import os
import signal
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from _harness import (
    argument_parser,
    load_average,
    machine_line,
    stop_on_sigterm,
    verdict,
)
from image_search_gateway import CpuMeter, bench_gateway, busy_processes
from image_search_quality import (
    PRECISION_GOAL,
    RECALL_GOAL,
    SKIN_TONES,
    THROUGHPUT_GOAL,
    K,
    build_catalog,
    embed_bytes,
    index_rows,
    measure_throughput,
    near_duplicate_quality,
    print_index_rows,
    print_quality,
    print_throughput,
    subcategory_quality,
    synthetic_vectors,
    tuned_hnsw,
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
