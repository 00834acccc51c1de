"""``pipelines`` and ``runs``."""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError

from modelyard.cli.options import AsJson, option_errors
from modelyard.cli.output import note, print_json, say, table
from modelyard.cli.state import State, state
from modelyard.errors import InvalidInput, NotFound, RunFailed
from modelyard.pipelines.dsl import Pipeline
from modelyard.pipelines.records import RunInfo, ScheduleSpec
from modelyard.pipelines.states import RunState, StepState

pipelines = typer.Typer(
    help="Pipelines: DAGs of steps, each in its own process.", no_args_is_help=True
)
runs = typer.Typer(help="Runs of pipelines: state, logs, cancel, retry.", no_args_is_help=True)
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="The namespace.")]


def load_pipeline(target: str) -> Pipeline:
    """Import ``module:function`` (from the current folder too) and return the @pipeline."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInput(f"{target!r}: write MODULE:FUNCTION, e.g. my_pipelines:nightly")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InvalidInput(
            f"cannot import {module_name!r}: {exc}. Run from the folder that "
            "holds it, or install it"
        ) from exc
    except Exception as exc:  # the user's module failed as it ran: say where, in one line
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise InvalidInput(
            f"importing {module_name!r} failed at {where.filename}:{where.lineno}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    found = getattr(module, attr, None)
    if not isinstance(found, Pipeline):
        raise InvalidInput(f"{target} is not a @pipeline function")
    return found


def parse_params(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE``; VALUE is read as JSON when it parses (numbers, lists), else a string."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param {item!r}: write NAME=VALUE")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


@pipelines.command("register")
def register(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="MODULE:FUNCTION")],
    namespace: Namespace,
) -> None:
    """Compile a @pipeline and store its spec (same content, same version)."""
    info = state(ctx).client().register_pipeline(namespace, load_pipeline(target))
    say(
        "registered pipeline ",
        (f"{namespace}/{info.name}", "bold"),
        f" spec {info.digest[:12]} ({info.versions} version{'s' if info.versions > 1 else ''})",
    )


@pipelines.command("list")
def list_pipelines(
    ctx: typer.Context,
    namespace: Namespace,
    as_json: AsJson = False,
) -> None:
    """The namespace's pipelines and their newest spec."""
    found = state(ctx).client().list_pipelines(namespace)
    if as_json:
        print_json(found)
        return
    table(
        f"pipelines in {namespace}",
        ["name", "spec", "versions", "updated (UTC)", "description"],
        [
            (p.name, p.digest[:12], p.versions, f"{p.updated_at:%Y-%m-%d %H:%M:%S}", p.description)
            for p in found
        ],
    )


@pipelines.command("show")
def show(
    ctx: typer.Context,
    name: str,
    namespace: Namespace,
    as_json: AsJson = False,
) -> None:
    """The newest spec's tasks: their steps, dependencies, fan-outs and conditions."""
    info, spec = state(ctx).client().get_pipeline(namespace, name)
    if as_json:
        print_json(spec)
        return
    say((f"{namespace}/{name}", "bold"), f" spec {info.digest[:12]}: {spec.description}")
    table(
        "tasks",
        ["task", "step", "after", "fan-out", "condition"],
        [
            (
                t.id,
                t.step,
                ", ".join(sorted(spec.upstream(t))),
                "yes" if t.loop else "",
                " and ".join(f"{c.left.source()} {c.op} {c.right.source()}" for c in t.conditions),
            )
            for t in spec.tasks
        ],
    )


@pipelines.command("run")
def run(
    ctx: typer.Context,
    name: str,
    namespace: Namespace,
    param: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the run to end.")] = False,
) -> None:
    """Start a run of the newest spec."""
    client = state(ctx).client()
    started = client.run_pipeline(namespace, name, parse_params(param or []))
    say("run ", (started.id, "bold"), " queued")
    if wait:
        finished = client.wait_run(namespace, started.id)
        _show_run(finished, state(ctx))
        _raise_unless_succeeded(finished)


@pipelines.command("export")
def export(
    ctx: typer.Context,
    name: str,
    namespace: Namespace,
    format: Annotated[str, typer.Option(help="kfp")] = "kfp",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
) -> None:
    """Write the pipeline as Kubeflow Pipelines v2 IR YAML."""
    text = state(ctx).client().export_pipeline(namespace, name, format)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        say(f"wrote {output}")


def _raise_unless_succeeded(run: RunInfo) -> None:
    if run.state != RunState.SUCCEEDED:
        raise RunFailed(
            f"run {run.id} of {run.pipeline} {run.state}"
            + (f": {run.reason}" if run.reason else "")
            + f" (logs: 'modelyard runs logs {run.id[:12]} -n {run.namespace}')"
        )


def _cached(run: RunInfo) -> bool:
    """Every step of the run reused an earlier result (nothing ran, so no logs)."""
    return bool(run.steps) and all(s.state == StepState.CACHED for s in run.steps)


_COLOURS: dict[str, str] = {
    RunState.SUCCEEDED: "green",
    RunState.FAILED: "red",
    RunState.CANCELLED: "yellow",
}


def _show_run(run: RunInfo, who: State) -> None:
    colour = _COLOURS.get(run.state, "blue")
    say(
        "run ",
        (run.id, "bold"),
        f" of {run.pipeline} ({run.digest[:12]}): ",
        (run.state, colour),
        f" — {run.reason}" if run.reason else "",
    )
    if _cached(run):
        say(f"every step ({len(run.steps)}) came from the cache: nothing ran again")
    table(
        "steps",
        ["step", "attempt", "state", "reason"],
        [(s.node, s.attempt, s.state, s.reason or "") for s in run.steps],
    )
    if run.history:
        table(
            "history",
            ["at (UTC)", "step", "what"],
            [
                (f"{h.at:%Y-%m-%d %H:%M:%S}", h.node or "", who.named(h.message))
                for h in run.history
            ],
            keep=0,
        )


@runs.command("list")
def list_runs(
    ctx: typer.Context,
    namespace: Namespace,
    pipeline: Annotated[str | None, typer.Option()] = None,
    as_json: AsJson = False,
) -> None:
    """The namespace's runs, newest first (ids whole: any unique prefix names a run)."""
    found = state(ctx).client().list_runs(namespace, pipeline)
    if as_json:
        print_json(found)
        return
    table(
        f"runs in {namespace}",
        ["run", "pipeline", "state", "created (UTC)", "reason"],
        [(r.id, r.pipeline, r.state, f"{r.created_at:%Y-%m-%d %H:%M:%S}", r.reason) for r in found],
    )


@runs.command("show")
def show_run(
    ctx: typer.Context,
    run_id: str,
    namespace: Namespace,
    as_json: AsJson = False,
) -> None:
    """A run's steps, their attempts and its history; RUN may be a unique prefix of its id."""
    who = state(ctx)
    found = who.client().get_run(namespace, run_id)
    print_json(found) if as_json else _show_run(found, who)


@runs.command("logs")
def logs(
    ctx: typer.Context,
    run_id: str,
    namespace: Namespace,
    step: Annotated[str | None, typer.Option(help="Only this step.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
) -> None:
    """Every step's output, each line prefixed with its step's name; -f follows until the run
    ends."""
    client = state(ctx).client()
    printed = False
    for line in client.run_logs(namespace, run_id, step, follow):
        sys.stdout.write(line + "\n")  # as it is: no markup, no wrapping, no width
        printed = True
    sys.stdout.flush()
    if not printed:
        run = client.get_run(namespace, run_id)
        if _cached(run):
            note(
                f"run {run.id} has no logs: every step came from the cache, so none ran "
                "(the logs are those of the runs that computed them)"
            )
        elif run.state in (RunState.QUEUED, RunState.RUNNING) and not follow:
            note(f"run {run.id} is {run.state} and has no output yet (-f follows it)")


@runs.command("cancel")
def cancel(ctx: typer.Context, run_id: str, namespace: Namespace) -> None:
    """Stop a run: its running steps get SIGTERM (SIGKILL after the grace period)."""
    run = state(ctx).client().cancel_run(namespace, run_id)
    say(f"cancelling run {run.id}")


@runs.command("retry")
def retry(ctx: typer.Context, run_id: str, namespace: Namespace) -> None:
    """Run a failed or cancelled run's failed steps again; its successful ones are kept."""
    run = state(ctx).client().retry_run(namespace, run_id)
    say(f"retrying the failed steps of run {run.id}")


schedules = typer.Typer(
    help="Schedules: cron, intervals, and triggers on new versions.", no_args_is_help=True
)


@schedules.command("create")
def create_schedule(
    ctx: typer.Context,
    name: str,
    namespace: Namespace,
    pipeline: Annotated[str, typer.Option(help="The pipeline to run.")],
    cron: Annotated[str | None, typer.Option(help="5 fields, e.g. '0 * * * *'")] = None,
    every: Annotated[float | None, typer.Option(help="Interval in seconds.")] = None,
    timezone: Annotated[str, typer.Option(help="IANA zone the cron is read in.")] = "UTC",
    on: Annotated[
        str | None,
        typer.Option(help="Trigger: dataset.version.committed or model.version.committed"),
    ] = None,
    target: Annotated[str | None, typer.Option(help="Trigger: NS/NAME to watch.")] = None,
    version_param: Annotated[
        str | None, typer.Option(help="Trigger: the pipeline parameter that gets NS/NAME@VERSION.")
    ] = None,
    param: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable")] = None,
    max_concurrency: Annotated[int, typer.Option()] = 1,
    overlap: Annotated[
        str | None,
        typer.Option(help="skip or wait, past max-concurrency (default: skip; wait for triggers)"),
    ] = None,
    catchup: Annotated[bool, typer.Option(help="After downtime, run every missed slot.")] = False,
) -> None:
    """Run a pipeline on a cron, an interval, or each new dataset/model version."""
    values = {
        "name": name,
        "pipeline": pipeline,
        "cron": cron,
        "interval_seconds": every,
        "timezone": timezone,
        "on": on,
        "target": target,
        "param": version_param,
        "params": parse_params(param or []),
        "max_concurrency": max_concurrency,
        "overlap": overlap,
        "catchup": catchup,
    }
    try:
        spec = ScheduleSpec.model_validate(values)
    except ValidationError as exc:
        flags = {"interval_seconds": "--every", "param": "--version-param", "params": "--param"}
        raise option_errors(exc, flags) from None
    client = state(ctx).client()
    info = client.create_schedule(namespace, spec)
    say(
        "created schedule ",
        (info.name, "bold"),
        f" ({info.kind})" + (f", next run {info.next_fire}" if info.next_fire else ""),
    )
    if spec.on is not None and spec.target is not None:
        kind: Literal["dataset", "model"] = "dataset" if spec.on.startswith("dataset") else "model"
        try:
            client.get_version(spec.target, kind=kind)
        except NotFound:  # allowed (a trigger made before the first push), but maybe a typo
            ns = spec.target.partition("/")[0]
            note(
                f"note: no {kind} {spec.target} has a version yet: the trigger fires at its "
                f"first commit (is the name right? 'modelyard {kind}s list {ns}' shows them)"
            )


@schedules.command("list")
def list_schedules(
    ctx: typer.Context,
    namespace: Namespace,
    as_json: AsJson = False,
) -> None:
    """The namespace's schedules and triggers, with their next run."""
    found = state(ctx).client().list_schedules(namespace)
    if as_json:
        print_json(found)
        return
    table(
        f"schedules in {namespace}",
        ["name", "pipeline", "kind", "when", "paused", "next"],
        [
            (
                s.name,
                s.pipeline,
                s.kind,
                s.spec.get("cron")
                or s.spec.get("interval_seconds")
                or f"{s.spec.get('on')} {s.spec.get('target')}",
                s.paused,
                s.next_fire,
            )
            for s in found
        ],
    )


@schedules.command("pause")
def pause(ctx: typer.Context, name: str, namespace: Namespace) -> None:
    """Stop starting runs until resumed."""
    state(ctx).client().pause_schedule(namespace, name, True)
    say(f"paused {name}")


@schedules.command("resume")
def resume(ctx: typer.Context, name: str, namespace: Namespace) -> None:
    """Start runs again (missed slots are not run, unless the schedule catches up)."""
    info = state(ctx).client().pause_schedule(namespace, name, False)
    say(f"resumed {name}" + (f", next run {info.next_fire}" if info.next_fire else ""))


@schedules.command("delete")
def delete(ctx: typer.Context, name: str, namespace: Namespace) -> None:
    """Delete a schedule; runs it started are kept."""
    state(ctx).client().delete_schedule(namespace, name)
    say(f"deleted {name}")
