"""``pipelines`` and ``runs``."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from modelyard.cli.state import console, print_json, state, table
from modelyard.errors import InvalidInput
from modelyard.pipelines.dsl import Pipeline
from modelyard.pipelines.runs import RunInfo
from modelyard.pipelines.schedules import ScheduleSpec

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
    console.print(
        f"registered pipeline [bold]{namespace}/{info.name}[/] spec {info.digest[:12]} "
        f"({info.versions} version{'s' if info.versions > 1 else ''})"
    )


@pipelines.command("list")
def list_pipelines(
    ctx: typer.Context,
    namespace: Namespace,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    found = state(ctx).client().list_pipelines(namespace)
    if as_json:
        print_json([p.to_dict() for p in found])
        return
    table(
        f"pipelines in {namespace}",
        ["name", "spec", "versions", "updated", "description"],
        [(p.name, p.digest[:12], p.versions, p.updated_at, p.description) for p in found],
    )


@pipelines.command("show")
def show(
    ctx: typer.Context,
    name: str,
    namespace: Namespace,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    info, spec = state(ctx).client().get_pipeline(namespace, name)
    if as_json:
        print_json(spec.model_dump(mode="json"))
        return
    console.print(f"[bold]{namespace}/{name}[/] spec {info.digest[:12]}: {spec.description}")
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
    console.print(f"run [bold]{started.id}[/] queued")
    if wait:
        _show_run(client.wait_run(namespace, started.id))


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
        console.print(f"wrote {output}")


def _show_run(run: RunInfo) -> None:
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(run.state, "blue")
    console.print(
        f"run [bold]{run.id}[/] of {run.pipeline} ({run.digest[:12]}): "
        f"[{colour}]{run.state}[/]" + (f" — {run.reason}" if run.reason else "")
    )
    table(
        "steps",
        ["step", "attempt", "state", "reason"],
        [(s.node, s.attempt, s.state, s.reason or "") for s in run.steps],
    )
    if run.history:
        table(
            "history",
            ["at", "step", "what"],
            [(h.at.isoformat(timespec="seconds"), h.node or "", h.message) for h in run.history],
        )


@runs.command("list")
def list_runs(
    ctx: typer.Context,
    namespace: Namespace,
    pipeline: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    found = state(ctx).client().list_runs(namespace, pipeline)
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    table(
        f"runs in {namespace}",
        ["run", "pipeline", "state", "created", "reason"],
        [
            (r.id, r.pipeline, r.state, r.created_at.isoformat(timespec="seconds"), r.reason)
            for r in found
        ],
    )


@runs.command("show")
def show_run(
    ctx: typer.Context,
    run_id: str,
    namespace: Namespace,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    found = state(ctx).client().get_run(namespace, run_id)
    print_json(found.to_dict()) if as_json else _show_run(found)


@runs.command("logs")
def logs(
    ctx: typer.Context,
    run_id: str,
    namespace: Namespace,
    step: Annotated[str | None, typer.Option(help="Only this step.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
) -> None:
    """Every step's output, prefixed with [step]; -f follows until the run ends."""
    for line in state(ctx).client().run_logs(namespace, run_id, step, follow):
        console.print(line, markup=False, highlight=False)


@runs.command("cancel")
def cancel(ctx: typer.Context, run_id: str, namespace: Namespace) -> None:
    state(ctx).client().cancel_run(namespace, run_id)
    console.print(f"cancelling run {run_id}")


@runs.command("retry")
def retry(ctx: typer.Context, run_id: str, namespace: Namespace) -> None:
    state(ctx).client().retry_run(namespace, run_id)
    console.print(f"retrying the failed steps of run {run_id}")


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
    spec = ScheduleSpec.model_validate(
        {
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
    )
    info = state(ctx).client().create_schedule(namespace, spec)
    console.print(
        f"created schedule [bold]{info.name}[/] ({info.kind})"
        + (f", next run {info.next_fire}" if info.next_fire else "")
    )


@schedules.command("list")
def list_schedules(
    ctx: typer.Context,
    namespace: Namespace,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    found = state(ctx).client().list_schedules(namespace)
    if as_json:
        print_json([s.to_dict() for s in found])
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
    state(ctx).client().pause_schedule(namespace, name, True)
    console.print(f"paused {name}")


@schedules.command("resume")
def resume(ctx: typer.Context, name: str, namespace: Namespace) -> None:
    info = state(ctx).client().pause_schedule(namespace, name, False)
    console.print(f"resumed {name}" + (f", next run {info.next_fire}" if info.next_fire else ""))


@schedules.command("delete")
def delete(ctx: typer.Context, name: str, namespace: Namespace) -> None:
    state(ctx).client().delete_schedule(namespace, name)
    console.print(f"deleted {name}")
