"""``deployments``: create, list, show, update and delete Web APIs; split their traffic."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from modelyard.cli.state import console, print_json, state, table
from modelyard.delivery.rollout import RolloutInfo
from modelyard.serving.deployments import DeploymentInfo
from modelyard.types import ModelRef

app = typer.Typer(
    help="Deployments: models served as Web APIs behind the gateway.", no_args_is_help=True
)
Name = Annotated[str, typer.Argument(help="NAMESPACE/DEPLOYMENT")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _split(target: str) -> tuple[str, str]:
    ref = ModelRef.parse(target)
    return ref.namespace, ref.name


def _spec(
    min_replicas: int | None,
    max_replicas: int | None,
    target_concurrency: float | None,
    scale_to_zero: bool | None,
    batch_size: int | None,
    timeout: float | None,
    spec_json: str | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(spec_json) if spec_json else {}
    scaling = {
        k: v
        for k, v in {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_concurrency": target_concurrency,
            "scale_to_zero": scale_to_zero,
        }.items()
        if v is not None
    }
    if scaling:
        spec["autoscaling"] = {**spec.get("autoscaling", {}), **scaling}
    if batch_size is not None:
        spec["batching"] = {**spec.get("batching", {}), "max_batch_size": batch_size}
    if timeout is not None:
        spec["timeout_s"] = timeout
    return spec


MinReplicas = Annotated[int | None, typer.Option(help="Replicas kept while it has traffic.")]
MaxReplicas = Annotated[int | None, typer.Option(help="Most replicas the autoscaler starts.")]
Target = Annotated[float | None, typer.Option(help="In-flight requests per replica to aim for.")]
ScaleToZero = Annotated[
    bool | None, typer.Option("--scale-to-zero/--no-scale-to-zero", help="Go to 0 when idle.")
]
BatchSize = Annotated[int | None, typer.Option(help="Adaptive batching: most rows per predict.")]
Timeout = Annotated[float | None, typer.Option(help="Seconds the gateway waits per request.")]
SpecJson = Annotated[str | None, typer.Option("--spec", help="More of the spec, as JSON.")]


@app.command("create")
def create(
    ctx: typer.Context,
    target: Name,
    model: Annotated[str, typer.Option(help="MODEL@alias|latest|N of the same namespace.")],
    min_replicas: MinReplicas = None,
    max_replicas: MaxReplicas = None,
    target_concurrency: Target = None,
    scale_to_zero: ScaleToZero = None,
    batch_size: BatchSize = None,
    timeout: Timeout = None,
    spec: SpecJson = None,
    wait: Annotated[bool, typer.Option(help="Wait until it serves.")] = False,
    as_json: AsJson = False,
) -> None:
    """Deploy a model as a Web API at /NAMESPACE/DEPLOYMENT/ on the gateway."""
    namespace, name = _split(target)
    body = _spec(
        min_replicas, max_replicas, target_concurrency, scale_to_zero, batch_size, timeout, spec
    )
    client = state(ctx).client()
    info = client.create_deployment(namespace, name, model, **body)
    if wait:
        info = client.wait_deployment(namespace, name)
    _show(info, as_json)


@app.command("list")
def list_deployments(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="The namespace.")],
    as_json: AsJson = False,
) -> None:
    found = state(ctx).client().list_deployments(namespace)
    if as_json:
        print_json([d.model_dump(mode="json") for d in found])
        return
    table(
        f"deployments in {namespace}",
        ["name", "model", "ready", "replicas", "status"],
        [
            (
                d.name,
                d.model,
                "yes" if d.ready else "no",
                sum(len(r.replicas) for r in d.revisions),
                d.status,
            )
            for d in found
        ],
    )


@app.command("show")
def show(ctx: typer.Context, target: Name, as_json: AsJson = False) -> None:
    """Revisions, traffic, replicas and the autoscaler's last decision."""
    _show(state(ctx).client().get_deployment(*_split(target)), as_json)


@app.command("update")
def update(
    ctx: typer.Context,
    target: Name,
    model: Annotated[str | None, typer.Option(help="MODEL@alias|latest|N.")] = None,
    min_replicas: MinReplicas = None,
    max_replicas: MaxReplicas = None,
    target_concurrency: Target = None,
    scale_to_zero: ScaleToZero = None,
    batch_size: BatchSize = None,
    timeout: Timeout = None,
    spec: SpecJson = None,
    as_json: AsJson = False,
) -> None:
    """Change the model or the spec: a new revision, which takes the traffic once ready."""
    namespace, name = _split(target)
    client = state(ctx).client()
    changes = _spec(
        min_replicas, max_replicas, target_concurrency, scale_to_zero, batch_size, timeout, spec
    )
    if "autoscaling" in changes:  # a partial block keeps the other fields of the current one
        current = client.get_deployment(namespace, name).spec.autoscaling.model_dump()
        changes["autoscaling"] = {**current, **changes["autoscaling"]}
    if model is not None:
        changes["model"] = model
    _show(client.update_deployment(namespace, name, **changes), as_json)


@app.command("traffic")
def traffic(
    ctx: typer.Context,
    target: Name,
    split: Annotated[
        list[str],
        typer.Argument(help="REVISION=PERCENT[:TAG] ... ('latest' for the latest ready)"),
    ],
    sticky_header: Annotated[
        str | None,
        typer.Option(help="Requests with one value of this header keep one revision (A/B)."),
    ] = None,
    shadow: Annotated[
        str | None,
        typer.Option(help="REVISION=PERCENT: copy that share of requests there to compare."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Split traffic over ready revisions, e.g. ``1=90 2=10:candidate``."""
    targets = []
    for item in split:
        revision, sep, rest = item.partition("=")
        percent, _, tag = rest.partition(":")
        if not sep or not percent.isdigit():
            raise typer.BadParameter(f"{item!r}: write REVISION=PERCENT[:TAG]")
        targets.append(
            {
                "revision": None if revision == "latest" else int(revision),
                "percent": int(percent),
                "tag": tag or None,
            }
        )
    copy = None
    if shadow is not None:
        revision, _, percent = shadow.partition("=")
        if not (revision.isdigit() and percent.isdigit()):
            raise typer.BadParameter(f"--shadow {shadow!r}: write REVISION=PERCENT")
        copy = {"revision": int(revision), "percent": int(percent)}
    info = (
        state(ctx)
        .client()
        .set_traffic(*_split(target), targets, sticky_header=sticky_header, shadow=copy)
    )
    _show(info, as_json)


@app.command("strategy")
def strategy(
    ctx: typer.Context,
    target: Name,
    kind: Annotated[str, typer.Argument(help="replace | canary")],
    steps: Annotated[str, typer.Option(help="Canary percents, e.g. 10,50,100.")] = "10,50,100",
    min_step_seconds: Annotated[float, typer.Option(help="Shortest step.")] = 30.0,
    max_step_seconds: Annotated[
        float, typer.Option(help="An inconclusive step this long pauses the rollout.")
    ] = 900.0,
    min_requests: Annotated[int, typer.Option(help="Per revision and step, to judge.")] = 100,
    max_error_increase: Annotated[
        float, typer.Option(help="Largest error-rate increase that passes (0.01 = 1 point).")
    ] = 0.01,
    latency_tolerance: Annotated[
        float, typer.Option(help="Median latency increase allowed (0.2 = 20%).")
    ] = 0.2,
    as_json: AsJson = False,
) -> None:
    """How new revisions take the traffic: at once, or in judged canary steps."""
    try:
        percents = [int(p) for p in steps.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--steps {steps!r}: write percents like 10,50,100") from None
    body: dict[str, Any] = {
        "strategy": kind,
        "steps": percents,
        "min_step_seconds": min_step_seconds,
        "max_step_seconds": max_step_seconds,
        "analysis": {
            "min_requests": min_requests,
            "max_error_rate_increase": max_error_increase,
            "latency_tolerance": latency_tolerance,
        },
    }
    _show(state(ctx).client().set_strategy(*_split(target), **body), as_json)


@app.command("rollout")
def rollout(
    ctx: typer.Context,
    target: Name,
    revision: Annotated[int, typer.Option(help="A revision that was ready once.")],
    as_json: AsJson = False,
) -> None:
    """Roll a ready revision out in canary steps (under the canary strategy, new revisions
    start theirs by themselves)."""
    _show_rollout(state(ctx).client().start_rollout(*_split(target), revision), as_json)


def _action(action: str, doc: str) -> None:
    def command(ctx: typer.Context, target: Name, as_json: AsJson = False) -> None:
        _show_rollout(state(ctx).client().rollout_action(*_split(target), action), as_json)

    command.__doc__ = doc
    app.command(action)(command)


_action("promote", "Give the canary all the traffic now, ending the rollout.")
_action("rollback", "Send all traffic back to the stable revision; the canary is rejected.")
_action("pause", "Hold the rollout at its step; no verdict moves it until resumed.")
_action("resume", "Resume a paused rollout; the step's analysis starts afresh.")


@app.command("rollouts")
def rollouts(ctx: typer.Context, target: Name, as_json: AsJson = False) -> None:
    """The deployment's rollouts, newest first, with the analysis of each step."""
    found = state(ctx).client().rollouts(*_split(target))
    if as_json:
        print_json([r.model_dump(mode="json") for r in found])
        return
    for item in found:
        _show_rollout(item, False)


@app.command("history")
def history(
    ctx: typer.Context,
    target: Name,
    limit: Annotated[int, typer.Option(help="Latest events shown.")] = 100,
    as_json: AsJson = False,
) -> None:
    """Who created, deployed, promoted, rolled back or changed traffic, and when."""
    events = state(ctx).client().deployment_history(*_split(target), limit)
    if as_json:
        print_json([e.model_dump(mode="json") for e in events])
        return
    table(
        "history",
        ["when (UTC)", "event", "by", "what"],
        [
            (f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.type, e.actor or "-", _summary(e.data))
            for e in events
        ],
    )


def _summary(data: dict[str, Any]) -> str:
    shown = {k: v for k, v in data.items() if k not in ("spec", "analysis", "rollout")}
    text = json.dumps(shown, separators=(",", ":"))
    return text if len(text) <= 120 else text[:117] + "..."


def _show_rollout(info: RolloutInfo, as_json: bool) -> None:
    if as_json:
        print_json(info.model_dump(mode="json"))
        return
    console.print(
        f"[bold]rollout of revision {info.canary}[/] from {info.stable}: {info.state}, "
        f"step {info.step + 1}/{len(info.steps) - 1} at {info.percent}% "
        f"(steps {','.join(map(str, info.steps))}); started {info.started_at:%Y-%m-%d %H:%M:%S} "
        f"by {info.started_by or '-'}"
    )
    if info.reason:
        console.print(f"  {info.reason}")
    for analysis in info.analyses:
        console.print(
            f"  step {analysis['step'] + 1} ({analysis['percent']}%): {analysis['result']}: "
            + "; ".join(analysis["reasons"])
        )
    if info.last_verdict:
        console.print(
            f"  now: {info.last_verdict['result']}: " + "; ".join(info.last_verdict["reasons"])
        )


@app.command("delete")
def delete(ctx: typer.Context, target: Name) -> None:
    """Delete the deployment; its replicas drain and stop."""
    namespace, name = _split(target)
    state(ctx).client().delete_deployment(namespace, name)
    console.print(f"deleted deployment {namespace}/{name}")


def _show(info: DeploymentInfo, as_json: bool) -> None:
    if as_json:
        print_json(info.model_dump(mode="json"))
        return
    console.print(f"[bold]{info.namespace}/{info.name}[/] -> {info.model}: {info.status}")
    console.print(f"  path on the gateway: {info.path}/v2/models/{info.name}/infer")
    rollout = info.rollout
    if rollout.strategy == "canary":
        console.print(
            f"  rollout: canary {','.join(map(str, rollout.steps))}%, steps of "
            f"{rollout.min_step_seconds:g}-{rollout.max_step_seconds:g} s, "
            f"{rollout.analysis.min_requests} requests each"
        )
    if info.sticky_header:
        console.print(f"  sticky by header {info.sticky_header}")
    if info.shadow:
        console.print(f"  shadow: {info.shadow.percent}% copied to revision {info.shadow.revision}")
    table(
        "revisions",
        ["revision", "version", "state", "traffic", "replicas", "autoscaler"],
        [
            (
                r.name,
                r.model_version,
                r.state,
                f"{r.percent}%" + (f" tags {','.join(r.tags)}" if r.tags else ""),
                f"{sum(p.state == 'ready' for p in r.replicas)}/{r.desired_replicas}",
                r.scaling,
            )
            for r in info.revisions
        ],
    )
