"""``deployments``: create, list, show, update and delete Web APIs; split their traffic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from modelyard.cli.options import AsJson, split_target, with_options
from modelyard.cli.output import print_json, say, table
from modelyard.cli.state import State, state
from modelyard.client import Client, status_line
from modelyard.delivery.records import RolloutInfo
from modelyard.errors import InvalidInput
from modelyard.serving.records import DeploymentInfo
from modelyard.serving.states import ReplicaState, RevisionState, RolloutState

app = typer.Typer(
    help="Deployments: models served as Web APIs behind the gateway.", no_args_is_help=True
)
Name = Annotated[str, typer.Argument(help="NAMESPACE/DEPLOYMENT")]


def _model(model: str, namespace: str) -> str:
    """``--model``: NAME@REF of the deployment's namespace, or NS/NAME@REF with that namespace."""
    body, at, ref = model.partition("@")
    owner, slash, name = body.rpartition("/")
    if not slash:
        return model
    if owner != namespace:
        raise InvalidInput(
            f"--model {model!r}: a deployment in {namespace!r} serves a model of {namespace!r}; "
            f"write NAME@REF (or {namespace}/NAME@REF), and push the model to {namespace!r} "
            "first if it lives elsewhere"
        )
    return f"{name}{at}{ref}"


Wait = Annotated[
    bool,
    typer.Option(
        "--wait", help="Wait until the change serves (a failed revision exits with code 8)."
    ),
]


@dataclass(frozen=True)
class SpecFlags:
    """The spec flags of ``deployments create`` and ``update``: what is not given stays as it is
    (``update``) or takes the server's default (``create``)."""

    min_replicas: Annotated[
        int | None, typer.Option(help="Replicas kept while it has traffic.")
    ] = None
    max_replicas: Annotated[
        int | None, typer.Option(help="Most replicas the autoscaler starts.")
    ] = None
    target_concurrency: Annotated[
        float | None, typer.Option(help="In-flight requests per replica to aim for.")
    ] = None
    scale_to_zero: Annotated[
        bool | None,
        typer.Option("--scale-to-zero/--no-scale-to-zero", help="Go to 0 when idle."),
    ] = None
    batch_size: Annotated[
        int | None, typer.Option(help="Adaptive batching: most rows per predict.")
    ] = None
    timeout: Annotated[
        float | None, typer.Option(help="Seconds the gateway waits per request.")
    ] = None
    spec: Annotated[str | None, typer.Option("--spec", help="More of the spec, as JSON.")] = None

    def body(self) -> dict[str, Any]:
        """The spec fields they set: ``--spec`` JSON, then each flag over it."""
        try:
            spec = json.loads(self.spec) if self.spec else {}
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(
                f"--spec is not JSON ({exc}): give a JSON object, e.g. '{{\"timeout_s\": 30}}'"
            ) from None
        if not isinstance(spec, dict):
            raise typer.BadParameter("--spec: give a JSON object, e.g. '{\"timeout_s\": 30}'")
        scaling = {
            k: v
            for k, v in {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_concurrency": self.target_concurrency,
                "scale_to_zero": self.scale_to_zero,
            }.items()
            if v is not None
        }
        if scaling:
            spec["autoscaling"] = {**spec.get("autoscaling", {}), **scaling}
        if self.batch_size is not None:
            spec["batching"] = {**spec.get("batching", {}), "max_batch_size": self.batch_size}
        if self.timeout is not None:
            spec["timeout_s"] = self.timeout
        return spec


@app.command("create")
@with_options(SpecFlags)
def create(
    ctx: typer.Context,
    target: Name,
    model: Annotated[
        str, typer.Option(help="NAME@alias|latest|N, a model of the deployment's namespace.")
    ],
    flags: SpecFlags,
    wait: Wait = False,
    as_json: AsJson = False,
) -> None:
    """Deploy a model as a Web API at /NAMESPACE/DEPLOYMENT/ on the gateway."""
    namespace, name = split_target(target)
    body = flags.body()
    who = state(ctx)
    client = who.client()
    info = client.create_deployment(namespace, name, _model(model, namespace), **body)
    if wait:
        info = client.wait_deployment(namespace, name)
    _show(info, as_json, who)


@app.command("list")
def list_deployments(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="The namespace.")],
    as_json: AsJson = False,
) -> None:
    """The namespace's deployments, their model and what each is doing."""
    found = state(ctx).client().list_deployments(namespace)
    if as_json:
        print_json(found)
        return
    table(
        f"deployments in {namespace}",
        ["name", "model", "ready", "replicas", "status"],
        [
            (
                d.name,
                (d.model or "-") + (" (realtime)" if d.spec.realtime else ""),
                "yes" if d.ready else "no",
                sum(len(r.replicas) for r in d.revisions),
                status_line(d.status),
            )
            for d in found
        ],
    )


@app.command("show")
def show(ctx: typer.Context, target: Name, as_json: AsJson = False) -> None:
    """Revisions, traffic, replicas and the autoscaler's last decision."""
    who = state(ctx)
    _show(who.client().get_deployment(*split_target(target)), as_json, who)


@app.command("update")
@with_options(SpecFlags)
def update(
    ctx: typer.Context,
    target: Name,
    *,
    model: Annotated[
        str | None, typer.Option(help="NAME@alias|latest|N, a model of the deployment's namespace.")
    ] = None,
    flags: SpecFlags,
    wait: Wait = False,
    as_json: AsJson = False,
) -> None:
    """Change the model or the spec: a new revision, which takes the traffic once ready (with
    --wait: once it serves; under a canary strategy, from its first step)."""
    namespace, name = split_target(target)
    who = state(ctx)
    client = who.client()
    changes = flags.body()
    before = client.get_deployment(namespace, name)
    if "autoscaling" in changes:  # a partial block keeps the other fields of the current one
        changes["autoscaling"] = {
            **before.spec.autoscaling.model_dump(),
            **changes["autoscaling"],
        }
    if model is not None:
        changes["model"] = _model(model, namespace)
    info = client.update_deployment(namespace, name, **changes)
    if wait:
        newest = info.revisions[-1].number if info.revisions else None
        known = {r.number for r in before.revisions}
        revision = newest if newest is not None and newest not in known else None
        info = client.wait_deployment(namespace, name, revision=revision)
    _show(info, as_json, who)


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
    wait: Wait = False,
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
    who = state(ctx)
    client = who.client()
    namespace, name = split_target(target)
    info = client.set_traffic(namespace, name, targets, sticky_header=sticky_header, shadow=copy)
    if wait:
        info = _wait_for_traffic(client, info)
    _show(info, as_json, who)


@app.command("strategy")
def strategy(
    ctx: typer.Context,
    target: Name,
    kind: Annotated[str, typer.Argument(help="replace | canary | shadow")],
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
    wait: Wait = False,
    as_json: AsJson = False,
) -> None:
    """How new revisions take the traffic: at once, in judged canary steps, or first as a
    shadow beside the stable revision until promoted or rolled back (a realtime deployment's
    shadow writes its predictions aside)."""
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
    who = state(ctx)
    client = who.client()
    info = client.set_strategy(*split_target(target), **body)
    if wait:
        info = _wait_for_traffic(client, info)
    _show(info, as_json, who)


def _wait_for_traffic(client: Client, info: DeploymentInfo) -> DeploymentInfo:
    """Until every revision with a share of the traffic has a ready replica; a revision that is
    starting (a new one) is waited for too."""
    wanted = [
        r.number for r in info.revisions if r.percent > 0 or r.state == RevisionState.DEPLOYING
    ]
    for number in wanted:
        info = client.wait_deployment(info.namespace, info.name, revision=number)
    return info if wanted else client.wait_deployment(info.namespace, info.name)


@app.command("rollout")
def rollout(
    ctx: typer.Context,
    target: Name,
    revision: Annotated[int, typer.Option(help="A revision that was ready once.")],
    as_json: AsJson = False,
) -> None:
    """Roll a ready revision out in canary steps, or as a shadow under the shadow strategy or
    on a realtime deployment (under either strategy, new revisions start theirs by themselves)."""
    who = state(ctx)
    _show_rollout(who.client().start_rollout(*split_target(target), revision), as_json, who)


def _action(action: str, doc: str) -> None:
    def command(ctx: typer.Context, target: Name, as_json: AsJson = False) -> None:
        who = state(ctx)
        _show_rollout(who.client().rollout_action(*split_target(target), action), as_json, who)

    command.__doc__ = doc
    app.command(action)(command)


_action("promote", "Give the canary (or shadow) all the traffic now, ending the rollout.")
_action("rollback", "Send all traffic back to the stable revision; the canary is rejected.")
_action("pause", "Hold the rollout at its step; no verdict moves it until resumed.")
_action("resume", "Resume a paused rollout; the step's analysis starts afresh.")


@app.command("rollouts")
def rollouts(ctx: typer.Context, target: Name, as_json: AsJson = False) -> None:
    """The deployment's rollouts, newest first, with the analysis of each step."""
    who = state(ctx)
    found = who.client().rollouts(*split_target(target))
    if as_json:
        print_json(found)
        return
    if not found:
        say(f"{target} has had no rollout")
    for item in found:
        _show_rollout(item, False, who)


@app.command("history")
def history(
    ctx: typer.Context,
    target: Name,
    limit: Annotated[int, typer.Option(help="Latest events shown.")] = 100,
    as_json: AsJson = False,
) -> None:
    """Who created, deployed, promoted, rolled back or changed traffic, and when."""
    who = state(ctx)
    events = who.client().deployment_history(*split_target(target), limit)
    if as_json:
        print_json(events)
        return
    table(
        f"history of {target}",
        ["when (UTC)", "event", "by", "what"],
        [
            (
                f"{e.created_at:%Y-%m-%d %H:%M:%S}",
                e.type,
                who.who(e.actor),
                who.named(_summary(e.data)),
            )
            for e in events
        ],
        keep=2,
    )


@app.command("logs")
def logs(
    ctx: typer.Context,
    target: Name,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C ends).")
    ] = False,
    revision: Annotated[int | None, typer.Option(help="Only this revision (its number).")] = None,
    replica: Annotated[str | None, typer.Option(help="Only this replica (its id).")] = None,
    since: Annotated[
        str | None, typer.Option(help="Lines since 30s, 10m, 2h, 1d ago or an ISO 8601 time.")
    ] = None,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
) -> None:
    """What the replicas logged, merged in time order: TIME REPLICA TEXT per line."""
    lines = (
        state(ctx)
        .client()
        .deployment_logs(
            *split_target(target),
            revision=revision,
            replica=replica,
            since=since,
            tail=tail,
            follow=follow,
        )
    )
    for line in lines:
        typer.echo(line.format())  # as it is: no markup, no wrapping, no width


_UNSHOWN = {"spec", "analysis", "rollout", "alert", "evidence"}  # long, or ids: see --json


def _summary(data: dict[str, Any]) -> str:
    """An event's data as short ``key=value`` pairs (``--json`` has all of it)."""
    parts = []
    for key, value in data.items():
        if key in _UNSHOWN or value in (None, "", [], {}):
            continue
        if key == "slos" and isinstance(value, list):
            value = ", ".join(str(o.get("name", "?")) for o in value if isinstance(o, dict))
        elif key == "traffic" and isinstance(value, dict):
            value = _traffic(value)
        elif isinstance(value, dict):
            value = "(" + ", ".join(f"{k} {_number(v)}" for k, v in value.items()) + ")"
        elif isinstance(value, list):
            value = json.dumps(value)
        parts.append(f"{key}={_number(value)}")
    return status_line(", ".join(parts))


def _traffic(traffic: dict[str, Any]) -> str:
    """A traffic split as the CLI takes it: ``r1=90 r2=10 (tag canary on r2)``, "latest" for a
    target without a revision, then the sticky header and the shadow."""
    shares, extras = [], []
    for target in traffic.get("targets") or []:
        if not isinstance(target, dict):
            continue
        name = f"r{target['revision']}" if target.get("revision") else "latest"
        shares.append(f"{name}={target.get('percent', 0)}")
        if target.get("tag"):
            extras.append(f"tag {target['tag']} on {name}")
    if traffic.get("sticky_header"):
        extras.append(f"sticky on {traffic['sticky_header']}")
    shadow = traffic.get("shadow")
    if isinstance(shadow, dict):
        extras.append(f"shadow r{shadow.get('revision')} {shadow.get('percent')}%")
    return " ".join(shares) + (f" ({', '.join(extras)})" if extras else "")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _show_rollout(info: RolloutInfo, as_json: bool, who: State) -> None:
    if as_json:
        print_json(info)
        return
    # Every percent of ``steps`` is a step, the last (100) being the promotion: under way, the
    # rollout is at step ``step``; promoted, at the last.
    if info.strategy == "shadow":
        say(
            (f"shadow rollout of revision {info.canary}", "bold"),
            f" beside {info.stable}: {info.state}; started "
            f"{info.started_at:%Y-%m-%d %H:%M:%S} UTC by {who.who(info.started_by)}",
        )
        if info.shadow is not None:
            say("  predictions compared: " + ", ".join(f"{k} {v}" for k, v in info.shadow.items()))
        if info.reason:
            say(f"  {who.named(info.reason)}")
        return
    at = len(info.steps) if info.state == RolloutState.PROMOTED else info.step + 1
    say(
        (f"rollout of revision {info.canary}", "bold"),
        f" from {info.stable}: {info.state}, step {at}/{len(info.steps)} "
        f"({info.steps[at - 1]}% of {','.join(map(str, info.steps))}), "
        f"canary at {info.percent}% now; started {info.started_at:%Y-%m-%d %H:%M:%S} UTC "
        f"by {who.who(info.started_by)}",
    )
    if info.reason:
        say(f"  {who.named(info.reason)}")
    for analysis in info.analyses:
        say(
            f"  step {analysis['step'] + 1} ({analysis['percent']}%): {analysis['result']}: "
            + "; ".join(analysis["reasons"])
        )
    if info.last_verdict:
        say(f"  now: {info.last_verdict['result']}: " + "; ".join(info.last_verdict["reasons"]))


@app.command("delete")
def delete(ctx: typer.Context, target: Name) -> None:
    """Delete the deployment; its replicas drain and stop."""
    namespace, name = split_target(target)
    state(ctx).client().delete_deployment(namespace, name)
    say(f"deleted deployment {namespace}/{name}")


def _show(info: DeploymentInfo, as_json: bool, who: State) -> None:
    if as_json:
        print_json(info)
        return
    model = info.model or "no model"
    say((f"{info.namespace}/{info.name}", "bold"), f" -> {model}: {status_line(info.status)}")
    if status_line(info.status) != info.status:
        say("  (the replicas' last log lines: --json, revisions[].reason)")
    realtime = info.spec.realtime
    if realtime is None:
        say(f"  path on the gateway: {info.path}/v2/models/{info.name}/infer")
    else:
        say(
            f"  realtime worker: {realtime.function} on stream {realtime.stream}; "
            f"predictions on the gateway at /{info.namespace}/predictions/{info.name}/ENTITY"
        )
    say(f"  created {info.created_at:%Y-%m-%d %H:%M:%S} UTC by {who.who(info.created_by)}")
    rollout = info.rollout
    if rollout.strategy == "shadow":
        say("  rollout: a new revision is a shadow until promoted or rolled back")
    if rollout.strategy == "canary":
        say(
            f"  rollout: canary {','.join(map(str, rollout.steps))}%, steps of "
            f"{rollout.min_step_seconds:g}-{rollout.max_step_seconds:g} s, "
            f"{rollout.analysis.min_requests} requests each"
        )
    if info.sticky_header:
        say(f"  sticky by header {info.sticky_header}")
    if info.shadow:
        say(f"  shadow: {info.shadow.percent}% copied to revision {info.shadow.revision}")
    table(
        "revisions",
        ["revision", "version", "state", "traffic", "replicas", "autoscaler"],
        [
            (
                r.name,
                r.model_version,
                r.state,
                f"{r.percent}%" + (f" tags {','.join(r.tags)}" if r.tags else ""),
                f"{sum(p.state == ReplicaState.READY for p in r.replicas)}/{r.desired_replicas}",
                r.scaling,
            )
            for r in info.revisions
        ],
    )
