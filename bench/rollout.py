"""Rollout benchmark: a judged canary catches a bad version at its first step, passes a better one,
and what clients saw meanwhile.

Three new versions of a small ``python`` runtime model (``model.py`` sleeps ``--delay-ms`` per
call, default 4 ms, and returns the sum of its inputs):

- error regression: the new version fails every ``round(1 / --error-rate)``-th call of its
  replica (default 1 in 20 = 5%; a counter, not a coin, so the rate is exact);
- latency regression: the new version sleeps ``--slowdown`` times longer (default 3x = 12 ms);
- faster: the new version sleeps ``--speedup`` times as long (default 0.5x = 2 ms), fails
  nothing: a better version, which must never be rolled back.

Each run uses ``python -m modelyard up`` on a temporary home (SQLite, local blobs), started once
for the whole benchmark, and a fresh deployment per run with exactly one replica per revision
(``min_replicas = max_replicas = 1``): push the good version, deploy it, set the strategy, start
the load, ``--warmup`` seconds (default 3), then ``push`` the new version. The push trigger makes
the new revision by itself; nothing else is called until the run ends.

The load: closed-loop clients in one asyncio loop in a thread of this process, each on its own
keep-alive HTTP/1.1 connection to the gateway, sending OIP v2 inference and reading the whole
answer before sending again; every scenario runs once per count in ``--workers`` (default 8 and
32). Every answer is kept with its send and completion times (wall clock, the clock the control
plane stamps rollouts with, same machine), its status and the ``x-modelyard-revision`` header. A
failed request is any answer other than 200, a failed connection or a timeout (10 s). With 8 or
more clients the one stable replica, taking 90% of the traffic at the first step, queues (clients
saw 33 ms p50 for 4 ms of work with 8) while the canary's does not: the judge compares the
replicas' own service times (``x-modelyard-service-ms``), not the gateway's end-to-end times,
and each recorded analysis shows both.

Strategy ``canary`` (``--steps``, default 10,50,100; ``--min-requests`` per revision and step,
default 100, the platform's default; ``--min-step-seconds`` 10; ``--max-step-seconds`` 120;
``--max-error-rate-increase`` 0.01 and ``--latency-tolerance`` 0.2, the platform's defaults).
Printed per run, from the rollout's own timestamps (``started_at``: the transaction that marked
the canary ready and split the traffic; ``finished_at``: the rollback or the promotion) and the
client's records:

- the outcome and the step it came at: ``rolled_back at step 1 (10%)``, ``promoted after step 2
  (50%)`` (the last step before 100%);
- commit -> canary: from the end of ``push()`` (the version committed) to the rollout's start;
- canary -> end: the rollout's start to its rollback or promotion (detection, judge and write);
- commit -> end: the two together;
- gateway: from the rollback to the last answer the canary gave (the gateway learns the new
  table by its long poll; negative: the canary answered nothing after the rollback was written);
- the window: from ``started_at`` to the end, or to the canary's last answer after a rollback,
  whichever is later; the client requests that completed in it, how many failed, their share, and
  the ceiling = the canary's weight at the step it reached x the bad version's error rate; client
  p50/p99 of the answers in the window (200s only).

Strategy ``replace`` is the baseline for the two regressions (the platform's default; Flagger
and Argo Rollouts, the peers with judged canaries, need Kubernetes and cannot run here): the same
push, the new revision takes all the traffic once ready. Its window starts at the new revision's
``ready_at`` (the transaction that moved the traffic to it) and lasts as long as the same run's
canary window; printed: commit -> ready, ready -> the first request the new version answered,
the requests, failures, share and p50/p99 in the window, and the ratio failed with replace /
failed with canary. The canary run of each index goes first, then its replace run, then the next
index (``--runs``, default 5; ``--no-replace`` skips the baseline); the medians follow the runs.

Goals, printed as a verdict line per scenario and client count: the error regression rolled
back by itself in every run, with a failed share during the canary at most its weight x the
error rate; the latency regression rolled back at the first step in every run; the faster
version promoted, never rolled back, in every run (no false rollbacks). Times are printed, not
judged.

Run it (about 15 minutes with the defaults on 2 cores)::

    make bench BENCH=rollout                    # = .venv/bin/python bench/rollout.py
    .venv/bin/python bench/rollout.py --runs 1 --workers 8 --scenarios latency,faster
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import subprocess
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
from rollout_load import FIRST_STEP, PROMOTED, ROLLED_BACK, Scenario
from rollout_platform import NAMESPACE, Bench, Platform
from rollout_report import fmt, outcome_text, print_scenario, summary_line

SCENARIOS = ("error", "latency", "faster")
"""What each scenario's new version must come to, in every run."""


# main --------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument(
        "--runs", type=int, default=5, help="runs per scenario, client count and strategy (5)"
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"of {','.join(SCENARIOS)} (all)"
    )
    parser.add_argument(
        "--workers", default="8,32", help="closed-loop client counts, each a set of runs (8,32)"
    )
    parser.add_argument(
        "--no-replace", action="store_true", help="skip the replace baseline of the regressions"
    )
    parser.add_argument("--steps", default="10,50,100", help="canary percents (10,50,100)")
    parser.add_argument("--min-requests", type=int, default=100, help="per revision, step (100)")
    parser.add_argument("--min-step-seconds", type=float, default=10.0, help="(10)")
    parser.add_argument("--max-step-seconds", type=float, default=120.0, help="(120)")
    parser.add_argument("--max-error-rate-increase", type=float, default=0.01, help="(0.01)")
    parser.add_argument("--latency-tolerance", type=float, default=0.2, help="(0.2)")
    parser.add_argument("--delay-ms", type=float, default=4.0, help="good version's sleep (4)")
    parser.add_argument("--error-rate", type=float, default=0.05, help="bad version's (0.05)")
    parser.add_argument("--slowdown", type=float, default=3.0, help="bad version's factor (3)")
    parser.add_argument("--speedup", type=float, default=0.5, help="faster version's factor (0.5)")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before the push (3 s)")
    parser.add_argument(
        "--tail", type=float, default=2.0, help="load kept after the rollback (2 s)"
    )
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if set(args.scenarios) - set(SCENARIOS) or not args.scenarios:
        parser.error(f"--scenarios takes {','.join(SCENARIOS)}")
    args.steps = [int(p) for p in args.steps.split(",") if p.strip()]
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error("--workers takes client counts separated by commas, like 8,32")
    if (
        args.runs < 1
        or not args.workers
        or min(args.workers) < 1
        or not 0 < args.error_rate < 1
        or args.slowdown <= 0
        or not 0 < args.speedup < 1
    ):
        parser.error(
            "--runs >= 1, --workers >= 1 each, 0 < --error-rate < 1, --slowdown > 0, "
            "0 < --speedup < 1"
        )
    return args


def git_commit() -> str:
    """HEAD, and whether ``src/`` differs from it (the editable install imports the tree)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "src")
    return git("rev-parse", "--short", "HEAD") + (
        f" + uncommitted changes in src/ ({len(dirty.splitlines())} files)" if dirty else ""
    )


def benchmark(args: argparse.Namespace) -> None:
    from modelyard.client import Client

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    fail_every = round(1 / args.error_rate)
    error_rate = 1 / fail_every
    delay = args.delay_ms

    def make_scenario(key: str, workers: int) -> Scenario:
        good = {"delay_ms": delay, "fail_every": 0}
        if key == "error":
            return Scenario(
                key,
                f"new version fails 1 call in {fail_every} ({error_rate:.1%}), same {delay:g} ms "
                "sleep",
                good,
                {"delay_ms": delay, "fail_every": fail_every},
                error_rate,
                ROLLED_BACK,
                workers,
            )
        if key == "latency":
            return Scenario(
                key,
                f"new version sleeps {delay * args.slowdown:g} ms per call instead of {delay:g} "
                f"ms ({args.slowdown:g}x), fails nothing",
                good,
                {"delay_ms": delay * args.slowdown, "fail_every": 0},
                0.0,
                FIRST_STEP,
                workers,
            )
        return Scenario(
            key,
            f"new version sleeps {delay * args.speedup:g} ms per call instead of {delay:g} ms "
            f"({args.speedup:g}x), fails nothing: better, never to be rolled back",
            good,
            {"delay_ms": delay * args.speedup, "fail_every": 0},
            0.0,
            PROMOTED,
            workers,
        )

    scenarios = [make_scenario(key, w) for w in args.workers for key in args.scenarios]
    started = dt.datetime.now(dt.UTC)
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("modelyard", "numpy", "httpx", "uvicorn")
    )
    print(
        f"rollout benchmark: started {started:%Y-%m-%d %H:%M} UTC\n"
        f"machine: {machine_line()}; {versions}; "
        f"code {git_commit()}\n"
        f"platform: python -m modelyard up (SQLite, local blobs), one replica per revision; "
        f"model: python runtime, sleeps {delay:g} ms per call\n"
        f"load: {' and '.join(map(str, args.workers))} closed-loop clients, keep-alive HTTP/1.1 "
        f"through the gateway, {args.warmup:g} s before the push; {args.runs} run(s) per "
        f"scenario, client count and strategy"
        + (" (no replace baseline)" if args.no_replace else "")
        + "\n"
        f"canary: steps {args.steps}, min_requests {args.min_requests} per revision and step, "
        f"min_step_seconds {args.min_step_seconds:g}, max_step_seconds "
        f"{args.max_step_seconds:g}, max_error_rate_increase {args.max_error_rate_increase:g}, "
        f"latency_tolerance {args.latency_tolerance:g}\n"
        f"load average at start: {load_average()}",
        flush=True,
    )
    failure = ""
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-rollout-") as temp:
        work = Path(temp)
        platform_ = Platform(work / "home")
        try:
            token = platform_.start()
            with Client(url=f"http://127.0.0.1:{platform_.api_port}", api_key=token) as client:
                client.create_namespace(NAMESPACE)
                bench = Bench(client, platform_, args, work)
                for scenario in scenarios:
                    for index in range(1, args.runs + 1):
                        canary = bench.canary(scenario, index)
                        scenario.canary.append(canary)
                        line = (
                            f"  {scenario.label} run {index}: canary {outcome_text(canary)} "
                            f"(commit->end {fmt(canary.commit_to_end_s, '.2f', ' s')}, "
                            f"{canary.window.failed if canary.window else '-'} failed)"
                        )
                        if scenario.goal != PROMOTED and not args.no_replace:
                            window = canary.window.seconds if canary.window else 10.0
                            replace = bench.replace(scenario, index, window)
                            scenario.replace.append(replace)
                            line += (
                                f", replace {replace.outcome} "
                                f"({replace.window.failed if replace.window else '-'} failed in "
                                f"{window:.2f} s)"
                            )
                        print(f"{line}; load {load_average()}", flush=True)
        except Exception as exc:  # print what was measured before the failure
            failure = f"{type(exc).__name__}: {exc}"
            print(f"FAILED: {failure}\n{platform_.log_tail()}", flush=True)
        finally:
            platform_.stop()
    for scenario in scenarios:
        if scenario.canary:
            print_scenario(scenario, args)
    print(
        "\ncolumns (times in seconds): push = push() of the new version, upload and commit; "
        "commit->canary = end of push() to the rollout's started_at; canary->end = started_at "
        "to finished_at (the rollback or the promotion); gateway = finished_at to the last "
        "answer of a rolled back canary; window = the rollout's started_at to its end, or to a "
        "rolled back canary's last answer if later (replace: as long, from the new revision's "
        "ready_at); first answer = ready_at to the first request the new revision answered; "
        "requests, failed (non-200, no answer), share, p50/p99 (200s) = client requests "
        "completed in the window; ceiling = canary weight at the step reached x the new "
        "version's error rate; analysis = each step's verdict on the replicas' service times "
        "(x-modelyard-service-ms), with the gateway's end-to-end times beside them"
    )
    summary = [summary_line(scenario) for scenario in scenarios if scenario.canary]
    if summary:
        print(f"\nmedians of {args.runs} run(s):\n" + "\n".join(summary))
        verdicts = [
            f"  {scenario.label}: {sum(map(scenario.met, scenario.canary))} of "
            f"{len(scenario.canary)} {scenario.goal}, goal all  "
            + verdict(all(map(scenario.met, scenario.canary)))
            for scenario in scenarios
            if scenario.canary
        ]
        print("verdicts:\n" + "\n".join(verdicts))
    print(f"load average at end: {load_average()}")
    if failure:
        raise SystemExit(f"the benchmark stopped early: {failure}")


def main(argv: Sequence[str] | None = None) -> None:
    benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
