"""Serving benchmark: one small scikit-learn model behind modelyard, BentoML, Ray Serve and MLflow.

The model: ``LogisticRegression(max_iter=1000)`` fitted on iris (``sklearn.datasets.load_iris``,
4 FP64 features), saved with joblib. One request = predict on one row (5.1, 3.5, 1.4, 0.2). It
is trained once, in ``bench/.venvs/sklearn``, with the same pinned scikit-learn every peer has.

Every target is driven by the same load generator: a separate process (this file run with
``--loadgen``, the modelyard venv's Python) running one asyncio loop (uvloop where installed) with
``--concurrency`` workers (default 32), each with its own keep-alive HTTP/1.1 connection over raw
asyncio streams and a pre-built request, in a closed loop: send, read the whole response, send
again. The workers start one after another over the first half of the warm-up: a server whose
worker processes share one listening socket hands a burst of connections to whichever process
wakes first (MLflow's two uvicorn workers then served nearly everything from one process).
``--warmup`` seconds (default 5) are discarded, then ``--seconds`` (default 20) are measured:
throughput = responses completed inside the window / window; p50 and p99 of the latency of those
responses; errors = non-200 answers, failed connections and timeouts (10 s) inside the window.
The generator and the server share the 2 cores, so the table shows the CPU each used during the
window (cores: CPU seconds / wall seconds; the server's is the sum over its whole process tree,
split by process after the table), and what anything else on the machine used (other sessions'
work). A reference row ``null`` drives a minimal asyncio HTTP server that answers a canned JSON:
the generator's ceiling on this machine. A reference row ``starlette`` drives a bare Starlette app
under uvicorn (httptools, uvloop, no access log; this venv) that decodes the same OIP v2 body and
calls the same ``predict``: the practical ceiling of a Python server for this model, which
modelyard's gateway + replica are compared with.

The targets, each started, measured and stopped before the next (every peer in its own venv,
created under ``bench/.venvs/<peer>`` on first use, minutes, not timed):

- modelyard (this venv): ``python -m modelyard up`` on a temporary home (SQLite, local blobs),
  the model pushed with ``runtime="sklearn"``, one deployment with exactly one replica
  (``min_replicas = max_replicas = 1``); requests are KServe OIP v2 through the gateway with
  ``Authorization: Bearer <admin key>``.
- BentoML: a ``@bentoml.service`` class with one ``@bentoml.api`` ``predict(input_data:
  np.ndarray) -> np.ndarray`` (the layout of BentoML's iris quickstart; the model is loaded with
  joblib in ``__init__``), served with ``bentoml serve``; body ``{"input_data": [[...]]}``.
- Ray Serve: a ``@serve.deployment`` class whose ``async __call__(request)`` reads the JSON body
  ``{"inputs": [[...]]}``, deployed with ``serve.run(..., route_prefix="/predict")`` on a local
  Ray started by the driver (``ray.init()`` defaults), reached through Serve's HTTP proxy.
- MLflow: ``mlflow models serve -m <dir> --env-manager local`` on a model written by
  ``mlflow.sklearn.save_model``; body ``{"inputs": [[...]]}`` to ``/invocations``.

Each peer runs with its defaults (one worker / one replica), and once more with the documented
setting that lets it use both cores (``--peer-workers``, default ``1,2``): BentoML
``@bentoml.service(workers=2)``, Ray ``@serve.deployment(num_replicas=2)``, MLflow
``--workers 2``. The best peer is the peer row with the highest throughput. Logging stays as
each ships it: BentoML, Ray Serve and MLflow (uvicorn) log a line per request; modelyard's gateway
access log is off unless ``up --access-log``.

modelyard's extra figures: the gateway's added latency (the same load straight to the replica's
own URL, with the replica token the gateway sends, at concurrency 1 and ``--concurrency``);
commit-to-serving (a retrained model whose
predictions differ is pushed; from the end of ``push()`` to the first gateway answer whose
``model_version`` is the new version, polled in a tight loop); the first answer from zero (a
second deployment that scales to zero; once it has no replica by every account (the API lists
none, no replica state file under the home's ``replicas/`` is its revision's, and every process
that ever served it is gone from /proc), one request through the gateway is timed; then, at zero
again, once more with the platform's launcher killed first, so that the replica waits for a fresh
launcher and its imports: cold start with the launcher warm and cold).

Goals: modelyard's throughput >= 1.5x the best peer's at an equal or lower p99, and >= 0.7x the
bare Starlette app's; the gateway adds <= 1 ms at p50; commit-to-serving <= 3 s; first answer
from zero, launcher warm, <= 1.5 s.

Run it (about 6 minutes with the defaults on 2 cores, once the venvs exist; creating them takes
a few minutes more, once)::

    make bench BENCH=serving                  # = .venv/bin/python bench/serving.py
    .venv/bin/python bench/serving.py --seconds 5 --peers modelyard,mlflow --peer-workers 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from _harness import (
    argument_parser,
    goal,
    load_average,
    machine_line,
    stop_on_sigterm,
)
from serving_load import SAMPLE, Row, Target, check_answer, drive, loadgen_main, null_server_main
from serving_modelyard import ModelyardFigures, bench_modelyard
from serving_peers import (
    PEER_STARTERS,
    PEERS,
    Processes,
    start_null,
    start_starlette,
    train_models,
    worker_label,
)

FAMILIES = ("null", "starlette", "modelyard", "bentoml", "ray", "mlflow")
THROUGHPUT_GOAL = 1.5
GATEWAY_P50_GOAL_MS = 1.0
COMMIT_GOAL_S = 3.0
FROM_ZERO_GOAL_S = 1.5
CEILING_GOAL = 0.7


def measure(
    procs: Processes,
    logs: Path,
    args: argparse.Namespace,
    family: str,
    label: str,
    start: Callable[[], Target],
) -> Row:
    """Start one target, check one answer, drive it, stop it; a failure becomes a row."""
    target: Target | None = None
    print(f"  {label}: starting ...", flush=True)
    try:
        began = time.monotonic()
        target = start()
        ready_s = time.monotonic() - began
        answer = check_answer(target)
        row = drive(target, target.spec(args.concurrency, args.warmup, args.seconds), logs)
        row.answer = answer
        print(
            f"  {label}: ready in {ready_s:.1f} s, answered {answer.strip()[:120]}; "
            f"{row.result.rps if row.result else 0:.0f} req/s",
            flush=True,
        )
        return row
    except Exception as exc:
        print(f"  {label}: FAILED: {exc}", flush=True)
        return Row(label, family, "", None, failure=str(exc).splitlines()[0])
    finally:
        if target is not None:
            procs.stop(target.started)


# report ------------------------------------------------------------------------------------------
def print_table(rows: Sequence[Row]) -> None:
    print(
        f"\n{'target':24s} {'settings':30s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'max ms':>8s} {'errors':>7s}  {'server':>6s} {'client':>6s} {'other':>5s} {'gen us':>6s}"
    )
    for row in rows:
        if row.result is None:
            print(f"{row.target:24s} {row.settings:30s} FAILED: {row.failure[:120]}")
            continue
        r = row.result
        lat = r.latencies_ms
        print(
            f"{row.target:24s} {row.settings:30s} {r.rps:8.0f} {lat.get('p50', 0):8.2f} "
            f"{lat.get('p99', 0):8.2f} {lat.get('max', 0):8.1f} {r.error_count:7d}  "
            f"{row.server_cores:6.2f} {row.client_cores:6.2f} {row.other_cores:5.2f} "
            f"{r.client_cpu_s / max(r.ok, 1) * 1e6:6.0f}"
        )
    print(
        "columns: req/s = OK responses in the window / window; p50, p99, max of their latency; "
        "errors = non-200, failed connections, timeouts; server, client, other = CPU cores busy "
        "during the window (server process tree, load generator, anything else on the machine: "
        "other sessions' work shows here); gen us = "
        "the load generator's CPU per OK response, in microseconds"
    )
    for row in rows:
        if row.result and row.result.errors:
            print(f"errors: {row.target} {row.settings}: {row.result.errors}")
        if row.result and row.result.connections > row.result.workers:
            print(
                f"reconnects: {row.target} {row.settings}: {row.result.connections} connections "
                f"opened for {row.result.workers} workers"
            )
    print("server CPU by process, in cores and in CPU microseconds per OK response:")
    for row in rows:
        if row.result and row.result.ok and row.family != "null":
            per = row.result.window_s / row.result.ok * 1e6
            split = ", ".join(
                f"{name} {sum(cores):.2f} ({sum(cores) * per:.0f} us)"
                + (f" = {' + '.join(f'{c:.2f}' for c in cores)}" if len(cores) > 1 else "")
                for name, cores in row.server_split.items()
            )
            print(f"  {row.target} {row.settings}: {split}")


def print_goals(
    mine: Row | None,
    peers: Sequence[Row],
    figures: ModelyardFigures | None,
    ceiling: Row | None = None,
) -> None:
    print()
    if mine and mine.result and ceiling and ceiling.result and ceiling.result.ok:
        ratio = mine.result.rps / ceiling.result.rps
        print(
            f"modelyard through the gateway / bare Starlette ({ceiling.settings}): throughput "
            f"{ratio:.2f}x   " + goal(f">= {CEILING_GOAL:.1f}x", ratio >= CEILING_GOAL)
        )
    measured = [row for row in peers if row.result and row.result.ok]
    if mine and mine.result and measured:
        best = max(measured, key=lambda row: row.result.rps if row.result else 0)
        assert best.result is not None
        ratio = mine.result.rps / best.result.rps
        p99 = mine.result.latencies_ms["p99"] / best.result.latencies_ms["p99"]
        print(
            f"modelyard / best peer ({best.target}, {best.settings}): throughput {ratio:.2f}x, "
            f"p99 {p99:.2f}x   "
            + goal(
                f"throughput >= {THROUGHPUT_GOAL:.1f}x at p99 <= 1.00x",
                ratio >= THROUGHPUT_GOAL and p99 <= 1.0,
            )
        )
    if figures is None:
        return
    by_setting = {row.settings: row for row in figures.rows}
    concurrencies = sorted({int(s.rsplit("c=", 1)[1]) for s in by_setting}, reverse=True)
    for concurrency in concurrencies:
        through = by_setting.get(f"through the gateway, c={concurrency}")
        straight = by_setting.get(f"straight, c={concurrency}")
        if not (through and straight and through.result and straight.result):
            continue
        a, b = through.result.latencies_ms, straight.result.latencies_ms
        added50, added99 = a["p50"] - b["p50"], a["p99"] - b["p99"]
        print(
            f"gateway added latency, c={concurrency:<3d} p50 {added50:+7.2f} ms   p99 "
            f"{added99:+7.2f} ms   "
            + goal(f"p50 <= {GATEWAY_P50_GOAL_MS:.1f} ms", added50 <= GATEWAY_P50_GOAL_MS)
        )
    if figures.commit_s is not None or figures.commit_detail:
        shown = f"{figures.commit_s:.3f} s" if figures.commit_s is not None else "not seen in 60 s"
        passed = figures.commit_s is not None and figures.commit_s <= COMMIT_GOAL_S
        print(
            f"commit-to-serving: {shown} ({figures.commit_polls} polls)   "
            f"{goal(f'<= {COMMIT_GOAL_S:.1f} s', passed)}\n  {figures.commit_detail}"
        )
    if figures.zero_s is not None or figures.zero_detail:
        shown = f"{figures.zero_s:.3f} s" if figures.zero_s is not None else "no answer"
        passed = figures.zero_s is not None and figures.zero_s <= FROM_ZERO_GOAL_S
        print(
            f"first answer from zero, launcher warm: {shown}   "
            f"{goal(f'<= {FROM_ZERO_GOAL_S:.1f} s', passed)}\n  {figures.zero_detail}"
        )
    if figures.zero_cold_s is not None or figures.zero_cold_detail:
        cold = figures.zero_cold_s
        print(
            f"first answer from zero, launcher cold: "
            f"{f'{cold:.3f} s' if cold is not None else 'no answer'}   (no goal: a fresh "
            f"launcher imports the serving stack first)\n  {figures.zero_cold_detail}"
        )


# main -------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds (20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds (5)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop workers (32)")
    parser.add_argument(
        "--peers", default=",".join(FAMILIES), help=f"targets to run, of {','.join(FAMILIES)}"
    )
    parser.add_argument(
        "--peer-workers", default="1,2", help="worker/replica counts per peer (1,2)"
    )
    parser.add_argument("--keep-logs", type=Path, help="copy the servers' logs to this folder")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    parser.add_argument("--null-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen or args.null_server:
        return args
    args.peers = [name.strip() for name in args.peers.split(",") if name.strip()]
    if set(args.peers) - set(FAMILIES):
        parser.error(f"--peers takes {','.join(FAMILIES)}")
    args.peer_workers = [int(n) for n in args.peer_workers.split(",") if n.strip()]
    if args.seconds <= 0 or args.warmup < 0 or args.concurrency < 1 or not args.peer_workers:
        parser.error("--seconds > 0, --warmup >= 0, --concurrency >= 1, --peer-workers needed")
    return args


def benchmark(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    started = dt.datetime.now(dt.UTC)
    print(
        f"serving benchmark: predict on one row of iris (LogisticRegression, 4 FP64 features) per "
        f"request; closed loop, {args.concurrency} workers on keep-alive HTTP/1.1 connections "
        f"(started over the first {args.warmup / 2:g} s), {args.warmup:g} s warm-up then "
        f"{args.seconds:g} s measured per row"
    )
    print(f"machine: {machine_line()}; started {started:%Y-%m-%d %H:%M} UTC")
    print(f"load average at start: {load_average()}", flush=True)
    rows: list[Row] = []
    figures: ModelyardFigures | None = None
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-serving-") as temp:
        work = Path(temp)
        logs = work / "logs"
        logs.mkdir()
        procs = Processes(logs)
        try:
            models = train_models(work)
            print(
                f"model: scikit-learn {models.sklearn}; answer for {SAMPLE}: "
                f"{models.answers[0]} (retrained: {models.answers[1]})",
                flush=True,
            )
            for family in args.peers:
                if family == "null":
                    rows.append(
                        measure(
                            procs,
                            logs,
                            args,
                            "null",
                            "ref: null server",
                            lambda: start_null(procs, work),
                        )
                    )
                elif family == "starlette":
                    rows.append(
                        measure(
                            procs,
                            logs,
                            args,
                            "starlette",
                            "ref: bare Starlette",
                            lambda: start_starlette(procs, work, models),
                        )
                    )
                elif family == "modelyard":
                    figures = bench_modelyard(procs, work, logs, args, models)
                    rows.extend(figures.rows)
                    if figures.failure:
                        rows.append(
                            Row(
                                f"modelyard {figures.version}",
                                "modelyard",
                                "",
                                None,
                                failure=figures.failure,
                            )
                        )
                else:
                    for workers in args.peer_workers:
                        starter = PEER_STARTERS[family]
                        rows.append(
                            measure(
                                procs,
                                logs,
                                args,
                                family,
                                f"{family} {worker_label(family, workers)}",
                                functools.partial(starter, procs, work, models, workers),
                            )
                        )
        finally:
            procs.stop_all()
            if args.keep_logs:
                shutil.copytree(logs, args.keep_logs, dirs_exist_ok=True)
        loop = next((row.result.loop for row in rows if row.result), "?")
        print(f"\nload generator: {loop}, one process, {sys.executable}")
        print_table(rows)
        mine = next(
            (r for r in rows if r.settings == f"through the gateway, c={args.concurrency}"), None
        )
        peers = [row for row in rows if row.family in PEERS]
        ceiling = next((row for row in rows if row.family == "starlette"), None)
        print_goals(mine, peers, figures, ceiling)
        if figures:
            for note in figures.notes:
                print(f"note: modelyard: {note}")
        for row in rows:
            if row.family in PEERS and row.answer:
                print(f"note: {row.target} ({row.settings}) answered {row.answer.strip()[:80]}")
    print(f"load average at end: {load_average()}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.loadgen:
        loadgen_main(args.loadgen)
    elif args.null_server:
        null_server_main(args.null_server)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
