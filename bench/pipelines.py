"""Pipelines benchmark: per-step overhead of modelyard, kfp.local and Prefect 3, side by side.

What it measures: the framework's own cost per step, with steps that do nothing. Two workloads
of N no-op steps (``--steps``, default 50), each step ``noop(i, salt) -> i + 1``:

- chain: every step takes the previous step's result as its input, so they run one after another;
- fan-out: N independent steps (no collect step: none of the three needs one to finish the run).

Per-step overhead = (wall time of one run - the steps' own work, ~0) / N. The wall time is taken
inside each system's driver, from the call that submits the run to the moment the driver sees it
complete. Each driver does one untimed warm-up run of each workload first, then ``--reps`` timed
runs of each (default 3, alternating chain and fan-out); the table shows the medians. Steps
that do not succeed are counted per run and shown beside the times, never hidden.

The three systems, each with its defaults except where said:

- modelyard (this venv): a control plane on a temporary home (SQLite, local blob folder), the
  executor thread started, ``pipeline_parallelism`` 8 (``--parallelism``); every step runs in a
  process of its own. The steps keep their default cache setting; a run parameter ``salt`` that
  differs per run makes every step a cache miss. Timed: ``create_run`` and ``executor.wake()``
  until ``get_run`` says the run finished. Excluded: building the control plane, compiling and
  registering the pipelines (once, before the warm-up). Measured twice: row ``modelyard`` runs in
  this process, whose ``__main__`` (this file) imports the control plane at its top, as the
  ``modelyard`` console script does; row ``modelyard-lightmain`` runs the same code from a small
  driver whose ``__main__`` imports nothing at its top, as under ``python -m modelyard up``
  (``--skip lightmain`` leaves it out). Steps once paid for re-running a heavy main file (when
  they forked from multiprocessing's fork server); the two rows show they no longer do.
- kfp.local, in ``bench/.venvs/kfp`` (``kfp==2.17.3``):
  ``kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False))``, lightweight
  ``@dsl.component`` steps with their defaults (each step's command pip-installs kfp into the
  running environment, where it is already present). Timed: calling the ``@dsl.pipeline``
  function, which runs it to completion. Excluded: the interpreter start and ``import kfp``.
- Prefect 3, in ``bench/.venvs/prefect`` (``prefect>=3,<4``): ``@task`` functions called inside a
  ``@flow`` in the driver's process; the chain calls them directly, the fan-out uses
  ``noop.map(...)`` with the default task runner (a thread pool). The API is Prefect's ephemeral
  server (a subprocess on 127.0.0.1 with SQLite under a temporary PREFECT_HOME, started on first
  use); no network. Timed: calling the flow function. Excluded: the interpreter start, imports,
  and the ephemeral server's start (it happens during the warm-up, whose time is printed).

The kfp and Prefect virtual environments are created under ``bench/.venvs/`` on first use (that
takes minutes; it is no part of any figure). For modelyard the script also prints where a step's
time goes, from the timestamps the executor records: each step's ``started_at`` to
``finished_at`` (starting its process, running it, recording the result), the gaps between
steps, and the run's own start and end; and, from a one-step probe run, which main file a step
process re-ran and how many modules it had loaded.

Goals: modelyard's per-step overhead at most 1/5 of kfp.local's and at most 3x Prefect's.

Run it (about 7 minutes with the defaults on 2 cores, once the venvs exist)::

    .venv/bin/python bench/pipelines.py
    .venv/bin/python bench/pipelines.py --steps 10 --reps 1 --skip kfp,prefect   # quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from _harness import VENVS, argument_parser, ensure_venv, goal, load_average, ms

from modelyard.controlplane import ControlPlane
from modelyard.pipelines.records import RunInfo
from modelyard.pipelines.states import FINISHED
from modelyard.settings import Settings

NAMESPACE = "bench"
WORKLOADS = ("chain", "fanout")
KFP_GOAL = 1 / 5  # modelyard / kfp.local at most
PREFECT_GOAL = 3.0  # modelyard / Prefect at most
# What pip installs in each venv. Prefect up to 3.8 allows any FastAPI >= 0.139, but FastAPI 0.151
# and later refuse the ``Body(min_items=...)`` its server uses; Prefect 3.9 pins fastapi<0.151.
REQUIREMENTS = {"kfp": ("kfp==2.17.3",), "prefect": ("prefect>=3,<4", "fastapi<0.151")}
RESULT_PREFIX = "BENCH-JSON "
DRIVER_TIMEOUT_S = 3600

# The pipeline module modelyard's steps load. It lives in a file of its own because every step
# process executes its pipeline's whole module: this one imports only the DSL.
MODELYARD_FLOWS = '''\
"""No-op pipelines written by bench/pipelines.py."""

from modelyard.pipelines.dsl import pipeline, step

STEPS = {steps}


@step
def noop(i: int, salt: int) -> int:
    return i + 1


@pipeline
def chain(salt: int) -> None:
    previous = noop(i=0, salt=salt)
    for _ in range(STEPS - 1):
        previous = noop(i=previous.output, salt=salt)


@pipeline
def fanout(salt: int) -> None:
    for index in range(STEPS):
        noop(i=index, salt=salt)


@step(cache=False)
def probe() -> str:
    import sys

    main = sys.modules.get("__mp_main__")
    return f"{getattr(main, '__file__', None)} {len(sys.modules)}"


@pipeline
def whereami() -> None:
    probe()
'''

# Runs bench_modelyard() of this file from a process whose __main__ (this driver) imports nothing
# at its top level: a step process re-runs only that top level.
MODELYARD_DRIVER = """\
import sys


def main():
    import dataclasses
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_pipelines", sys.argv[1])
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    work, steps, reps, parallelism = Path(sys.argv[2]), *map(int, sys.argv[3:6])
    result = bench.bench_modelyard(work, steps, reps, parallelism)
    print("BENCH-JSON " + json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    main()
"""

# The end of both peers' drivers: one warm-up run of each workload, then REPS timed runs, each
# with a new salt so that no cache answers; the figures as one JSON line on stdout.
TIMED_RUNS = """
workloads = {"chain": chain, "fanout": fanout}
result = {"version": __version__, "startup_s": time.perf_counter() - started, "warmup": {}}
result.update({name: [] for name in workloads})
salt = 0
for rep in range(-1, REPS):
    for name, run in workloads.items():
        salt += 1
        began = time.perf_counter()
        run(salt=salt)
        seconds = time.perf_counter() - began
        if rep < 0:
            result["warmup"][name] = seconds
        else:
            result[name].append(seconds)
print("BENCH-JSON " + json.dumps(result), flush=True)
"""

KFP_DRIVER = (
    """\
import json, sys, tempfile, time

started = time.perf_counter()
from kfp import __version__, dsl, local

STEPS, REPS = int(sys.argv[1]), int(sys.argv[2])


@dsl.component
def noop(i: int, salt: int) -> int:
    return i + 1


@dsl.pipeline
def chain(salt: int):
    previous = noop(i=0, salt=salt)
    for _ in range(STEPS - 1):
        previous = noop(i=previous.output, salt=salt)


@dsl.pipeline
def fanout(salt: int):
    for index in range(STEPS):
        noop(i=index, salt=salt)


local.init(
    runner=local.SubprocessRunner(use_venv=False),
    pipeline_root=tempfile.mkdtemp(prefix="kfp-outputs-"),
)
"""
    + TIMED_RUNS
)

PREFECT_DRIVER = (
    """\
import json, sys, time

started = time.perf_counter()
from prefect import __version__, flow, task, unmapped

STEPS, REPS = int(sys.argv[1]), int(sys.argv[2])


@task
def noop(i: int, salt: int) -> int:
    return i + 1


@flow
def chain(salt: int) -> None:
    previous = 0
    for _ in range(STEPS):
        previous = noop(previous, salt)


@flow
def fanout(salt: int) -> None:
    noop.map(range(STEPS), salt=unmapped(salt)).result()

"""
    + TIMED_RUNS
)


@dataclass
class Measured:
    """One system's wall times in seconds per workload, and what it says about itself."""

    system: str
    version: str
    startup_s: float
    warmup: dict[str, float]
    runs: dict[str, list[float]]
    notes: list[str] = field(default_factory=list)
    failed: dict[str, list[int]] = field(default_factory=dict)  # per timed run: steps not OK

    def per_step(self, workload: str, steps: int) -> float:
        return statistics.median(self.runs[workload]) / steps


# modelyard ----------------------------------------------------------------------------------------
@dataclass
class StepTimes:
    """Where one modelyard run's time went, from the timestamps the executor records."""

    queued_s: float  # run created -> run started by the executor
    first_start_s: float  # run started -> first step started
    durations: list[float]  # each step: started_at -> finished_at
    gaps: list[float]  # chain only: a step's finished_at -> the next step's started_at
    tail_s: float  # last step finished -> run finished
    wall_s: float  # run created -> run finished, as recorded


@dataclass
class ModelyardResult:
    measured: Measured
    breakdown: dict[str, list[StepTimes]]
    probe: str  # what a step process saw: the main file it re-ran (or None), modules loaded

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelyardResult:
        return cls(
            Measured(**data["measured"]),
            {w: [StepTimes(**t) for t in times] for w, times in data["breakdown"].items()},
            str(data["probe"]),
        )


def seconds(start: dt.datetime | None, end: dt.datetime | None) -> float:
    if start is None or end is None:
        raise RuntimeError("a finished run lacks a timestamp")
    return (end - start).total_seconds()


def step_times(run: RunInfo, chain: bool) -> StepTimes:
    steps = sorted(run.steps, key=lambda s: (s.started_at or run.created_at, s.node))
    starts = [s.started_at for s in steps]
    ends = [s.finished_at for s in steps]
    return StepTimes(
        queued_s=seconds(run.created_at, run.started_at),
        first_start_s=seconds(run.started_at, starts[0]),
        durations=[seconds(s, e) for s, e in zip(starts, ends, strict=True)],
        gaps=[seconds(e, s) for e, s in zip(ends, starts[1:], strict=False)] if chain else [],
        tail_s=seconds(max(e for e in ends if e is not None), run.finished_at),
        wall_s=seconds(run.created_at, run.finished_at),
    )


def load_flows(folder: Path, steps: int) -> ModuleType:
    """Write the no-op pipeline module to ``folder`` and import it from there.

    It is a file of its own because a step process executes its pipeline's whole module: this
    one imports only the DSL.
    """
    name = "modelyard_bench_noop"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(MODELYARD_FLOWS.replace("{steps}", str(steps)))
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return importlib.import_module(name)


def run_modelyard(
    plane: ControlPlane, pipeline: str, params: dict[str, Any]
) -> tuple[float, RunInfo]:
    started = time.perf_counter()
    run_id = plane.pipelines.create_run(NAMESPACE, pipeline, params)
    plane.executor.wake()
    while True:
        cursor = plane.events.last_id()
        run = plane.pipelines.get_run(NAMESPACE, run_id)
        if run.state in FINISHED:
            break
        plane.events.wait(cursor, timeout=1.0)
    elapsed = time.perf_counter() - started
    if run.state not in ("succeeded", "failed"):
        raise RuntimeError(f"modelyard run {run_id} of {pipeline} {run.state}: {run.reason}")
    return elapsed, run


def bench_modelyard(work: Path, steps: int, reps: int, parallelism: int) -> ModelyardResult:
    """Warm-up, then ``reps`` timed runs of each workload on a control plane in this process."""
    flows = load_flows(work, steps)
    plane = ControlPlane.build(
        Settings(home=work / "modelyard-home", api_port=0, pipeline_parallelism=parallelism)
    )
    try:
        plane.namespaces.create(NAMESPACE)
        plane.start_controllers()
        for pipeline in (*WORKLOADS, "whereami"):
            plane.pipelines.register(NAMESPACE, getattr(flows, pipeline).compile())
        warmup: dict[str, float] = {}
        runs: dict[str, list[float]] = {w: [] for w in WORKLOADS}
        breakdown: dict[str, list[StepTimes]] = {w: [] for w in WORKLOADS}
        # Steps that did not succeed are counted and reported, not hidden: the run still ran
        # every step (a chain stops at the first failure, which its step count shows).
        failed: dict[str, list[int]] = {w: [] for w in WORKLOADS}
        reasons: Counter[str] = Counter()
        salt = 0  # a new value for every run: no step can hit the cache of an earlier run
        for rep in range(-1, reps):
            for workload in WORKLOADS:
                salt += 1
                elapsed, run = run_modelyard(plane, workload, {"salt": salt})
                if len(run.steps) != steps:
                    raise RuntimeError(f"modelyard {workload} ran {len(run.steps)} steps")
                bad = [s for s in run.steps if s.state != "succeeded"]
                reasons.update(f"{workload}: {s.state}: {s.reason}" for s in bad)
                if rep < 0:
                    warmup[workload] = elapsed
                else:
                    runs[workload].append(elapsed)
                    failed[workload].append(len(bad))
                    breakdown[workload].append(step_times(run, chain=workload == "chain"))
        _, probed = run_modelyard(plane, "whereami", {})
        probe = str(probed.steps[0].outputs.get("result"))
    finally:
        plane.close()
    notes = [f"pipeline_parallelism={parallelism}, one process per step"]
    notes += [
        f"{count} step(s) of all runs, warm-up included, did not succeed: {reason}"
        for reason, count in reasons.most_common()
    ]
    version = metadata.version("modelyard")
    measured = Measured("modelyard", version, 0.0, warmup, runs, notes, failed)
    return ModelyardResult(measured, breakdown, probe)


def run_modelyard_driver(work: Path, steps: int, reps: int, parallelism: int) -> ModelyardResult:
    """:func:`bench_modelyard` in a fresh process of this venv whose ``__main__`` is light."""
    work.mkdir(parents=True)
    script = work / "modelyard_driver.py"
    script.write_text(MODELYARD_DRIVER)
    args = [__file__, str(work), str(steps), str(reps), str(parallelism)]
    data = run_json([sys.executable, str(script), *args], work, dict(os.environ), "modelyard")
    result = ModelyardResult.from_json(data)
    result.measured.system = "modelyard-lightmain"
    return result


# kfp.local and Prefect, each in its own venv -----------------------------------------------------
def driver_env(work: Path, system: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{VENVS / system / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["DO_NOT_TRACK"] = "1"
    if system == "prefect":
        env.update(
            PREFECT_HOME=str(work / "prefect-home"),
            PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true",
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY="false",
        )
    return env


def run_json(command: list[str], cwd: Path, env: dict[str, str], system: str) -> dict[str, Any]:
    """Run a driver; its stderr goes to a log file, its result is its last BENCH-JSON line."""
    log = cwd / "driver.log"
    with open(log, "wb") as out:
        done = subprocess.run(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=out, timeout=DRIVER_TIMEOUT_S
        )
    lines = done.stdout.decode(errors="replace").splitlines()
    found = [line for line in lines if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not found:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:] + lines[-10:])
        raise RuntimeError(f"the {system} driver failed (exit {done.returncode}):\n{tail}")
    data: dict[str, Any] = json.loads(found[-1][len(RESULT_PREFIX) :])
    return data


def run_driver(work: Path, system: str, source: str, steps: int, reps: int) -> Measured:
    python, notes = ensure_venv(system, REQUIREMENTS[system], loosen=True)
    folder = work / system
    folder.mkdir()
    script = folder / f"{system}_driver.py"
    script.write_text(source)
    command = [str(python), str(script), str(steps), str(reps)]
    data = run_json(command, folder, driver_env(work, system), system)
    return Measured(
        system,
        str(data["version"]),
        float(data["startup_s"]),
        {k: float(v) for k, v in data["warmup"].items()},
        {w: [float(v) for v in data[w]] for w in WORKLOADS},
        notes,
    )


# report -----------------------------------------------------------------------------------------
def print_table(results: Sequence[Measured], steps: int) -> None:
    print(
        f"\n{'workload':10s} {'system':26s} {'median wall':>11s} {'per step':>10s}  "
        f"{'timed runs (s)':20s} {'warm-up':>9s}  steps failed per run"
    )
    for workload in WORKLOADS:
        label = f"{workload} {steps}"
        for measured in results:
            walls = measured.runs[workload]
            failed = " ".join(str(n) for n in measured.failed.get(workload, [])) or "-"
            print(
                f"{label:10s} {measured.system + ' ' + measured.version:26s} "
                f"{statistics.median(walls):9.2f} s {measured.per_step(workload, steps):8.3f} s  "
                f"{' '.join(f'{w:.2f}' for w in walls):20s} {measured.warmup[workload]:7.2f} s  "
                f"{failed}"
            )
            label = ""


def print_goals(results: Sequence[Measured], steps: int) -> None:
    by_name = {m.system: m for m in results}
    goals = [("kfp.local", KFP_GOAL, "1/5"), ("prefect", PREFECT_GOAL, "3x")]
    if not any(other in by_name for other, _, _ in goals):
        return
    for mine in (m for m in results if m.system.startswith("modelyard")):
        print()
        for workload in WORKLOADS:
            for other, limit, said in goals:
                if other not in by_name:
                    continue
                ratio = mine.per_step(workload, steps) / by_name[other].per_step(workload, steps)
                caveat = " (timed runs had failed steps)" if any(mine.failed[workload]) else ""
                print(
                    f"{workload + ' ' + str(steps):10s} {mine.system + ' / ' + other:32s} "
                    f"per step {ratio:6.3f}   {goal(f'<= {limit:.3f} ({said})', ratio <= limit)}"
                    f"{caveat}"
                )


def print_breakdown(result: ModelyardResult) -> None:
    print(f"\n{result.measured.system}, where the time goes (all timed runs)")
    for workload, runs in result.breakdown.items():
        durations = [d for r in runs for d in r.durations]
        line = (
            f"  {workload:6s} step started->finished median {ms(statistics.median(durations))} "
            f"(min {ms(min(durations))}, max {ms(max(durations))})"
        )
        if workload == "chain":
            gaps = [g for r in runs for g in r.gaps]
            line += (
                f"; gap finished->next started median {ms(statistics.median(gaps))} "
                f"(max {ms(max(gaps))})"
            )
        else:
            busy = statistics.median(sum(r.durations) / r.wall_s for r in runs)
            line += f"; steps running at once on average {busy:.1f}"
        print(line)
        queued = statistics.median(r.queued_s for r in runs)
        print(
            f"         run created->started median {ms(queued)}"
            f", started->first step {ms(statistics.median(r.first_start_s for r in runs))}, "
            f"last step->run finished {ms(statistics.median(r.tail_s for r in runs))}, "
            f"recorded run wall median {statistics.median(r.wall_s for r in runs):.2f} s"
        )
    main_file, modules = result.probe.rsplit(" ", 1)
    print(
        f"  probe: in a step process, __mp_main__ (the main file it re-ran) is {main_file}; "
        f"{modules} modules loaded"
    )


# main -------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--steps", type=int, default=50, help="steps per workload (default 50)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per workload (default 3)")
    parser.add_argument(
        "--parallelism", type=int, default=8, help="modelyard pipeline_parallelism (default 8)"
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated rows to leave out: kfp, prefect, lightmain"
    )
    args = parser.parse_args(argv)
    args.skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    if args.steps < 2 or args.reps < 1 or args.parallelism < 1:
        parser.error("--steps must be >= 2, --reps and --parallelism >= 1")
    if args.skip - {*REQUIREMENTS, "lightmain"}:
        parser.error("--skip takes kfp, prefect, lightmain")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(
        f"pipelines benchmark: {args.steps} no-op steps per workload (chain: each step takes the "
        f"previous one's result; fanout: independent), warm-up run then median of {args.reps}; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(
        "excluded from every figure: venv creation, interpreter start and imports, pipeline "
        "compile/register (modelyard), Prefect's ephemeral server start (in its warm-up run)"
    )
    print(f"load average at start: {load_average()}", flush=True)
    mine: list[ModelyardResult] = []
    others: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-pipelines-") as temp:
        work = Path(temp)
        mine.append(bench_modelyard(work / "modelyard", args.steps, args.reps, args.parallelism))
        if "lightmain" not in args.skip:
            light = work / "modelyard-lightmain"
            mine.append(run_modelyard_driver(light, args.steps, args.reps, args.parallelism))
        drivers = {"kfp": ("kfp.local", KFP_DRIVER), "prefect": ("prefect", PREFECT_DRIVER)}
        for name, (system, source) in drivers.items():
            if name in args.skip:
                continue
            measured = run_driver(work, name, source, args.steps, args.reps)
            measured.system = system
            others.append(measured)
    results = [m.measured for m in mine] + others
    print_table(results, args.steps)
    print(
        "rows: modelyard = control plane in this process, whose __main__ imports it at the top; "
        "modelyard-lightmain = the same in a driver whose __main__ imports nothing at the top"
    )
    for measured in results:
        for note in measured.notes:
            print(f"note: {measured.system}: {note}")
    print_goals(results, args.steps)
    for result in mine:
        print_breakdown(result)
    if others:
        print(
            "\nstartup excluded above (driver: interpreter start to ready, imports included): "
            + ", ".join(f"{m.system} {m.startup_s:.2f} s" for m in others)
        )
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
