"""``streams`` and ``realtime``: where events go, and the deployments that turn them into
predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from modelyard.cli.options import AsJson, split_target
from modelyard.cli.output import note, print_json, say, table
from modelyard.cli.state import state
from modelyard.client import status_line

streams = typer.Typer(help="Streams: events of a product, kept per entity.", no_args_is_help=True)
realtime = typer.Typer(
    help="Realtime deployments: trigger rules, inference functions, predictions.",
    no_args_is_help=True,
)
Name = Annotated[str, typer.Argument(help="NAMESPACE/NAME")]


@streams.command("create")
def create_stream(
    ctx: typer.Context,
    target: Name,
    entity_field: Annotated[str, typer.Option(help="The entity key's field.")] = "user_id",
    id_field: Annotated[str, typer.Option(help="The event id's field.")] = "event_id",
    type_field: Annotated[str, typer.Option(help="The event type's field.")] = "type",
    time_field: Annotated[
        str | None, typer.Option(help="The event time's field (default: ingest time).")
    ] = None,
    field: Annotated[
        list[str] | None, typer.Option(help="NAME=TYPE checked at ingest; repeatable.")
    ] = None,
    retention: Annotated[str, typer.Option(help="How long events are kept.")] = "7d",
    allowed_lateness: Annotated[str, typer.Option(help="How late an event may be.")] = "1h",
) -> None:
    """Create a stream; events go to the gateway's /NAMESPACE/streams/NAME/events."""
    namespace, name = split_target(target)
    fields = dict(item.split("=", 1) for item in field or [] if "=" in item)
    info = (
        state(ctx)
        .client()
        .realtime.create_stream(
            namespace,
            name,
            entity_field=entity_field,
            id_field=id_field,
            type_field=type_field,
            time_field=time_field,
            fields=fields,
            retention=retention,
            allowed_lateness=allowed_lateness,
        )
    )
    note(f"created stream {info.key}")


@streams.command("list")
def list_streams(ctx: typer.Context, namespace: str, as_json: AsJson = False) -> None:
    found = state(ctx).client().realtime.list_streams(namespace)
    if as_json:
        print_json(found)
        return
    rows = [[s.name, s.spec.entity_field, s.spec.id_field, s.spec.retention] for s in found]
    table(None, ["name", "entity", "id", "retention"], rows)


@streams.command("get")
def get_stream(ctx: typer.Context, target: Name) -> None:
    print_json(state(ctx).client().realtime.get_stream(*split_target(target)))


@streams.command("delete")
def delete_stream(ctx: typer.Context, target: Name) -> None:
    """Delete a stream and its events."""
    state(ctx).client().realtime.delete_stream(*split_target(target))
    note(f"deleted stream {target}")


@streams.command("forget")
def forget_entity(ctx: typer.Context, target: Name, entity: str) -> None:
    """Delete every event of one entity from the stream."""
    deleted = state(ctx).client().realtime.delete_entity(*split_target(target), entity)
    note(f"deleted {deleted} events of {entity}")


@realtime.command("create")
def create(
    ctx: typer.Context,
    target: Name,
    stream: Annotated[str, typer.Option(help="A stream of the namespace.")],
    function: Annotated[str, typer.Option(help="module:function(history, model) -> value")],
    model: Annotated[str | None, typer.Option(help="name@alias|latest|N of the namespace")] = None,
    types: Annotated[
        list[str] | None, typer.Option("--type", help="Event types that trigger; repeatable.")
    ] = None,
    rule: Annotated[
        Path | None, typer.Option(help="A JSON file with the whole trigger rule.")
    ] = None,
    debounce: Annotated[str | None, typer.Option(help="One trigger per entity per window.")] = None,
    env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the worker.")] = None,
    emit_events: Annotated[
        bool, typer.Option(help="A realtime.prediction event per new prediction (webhooks).")
    ] = False,
) -> None:
    """Create a realtime deployment: its worker starts at once."""
    namespace, name = split_target(target)
    spec: dict[str, Any] = json.loads(rule.read_text()) if rule else {}
    if types:
        spec["types"] = types
    if debounce:
        spec["debounce"] = debounce
    environment = dict(item.split("=", 1) for item in env or [] if "=" in item)
    info = (
        state(ctx)
        .client()
        .realtime.create(
            namespace,
            name,
            stream=stream,
            function=function,
            model=model,
            rule=spec,
            env=environment,
            emit_events=emit_events,
        )
    )
    note(f"created realtime deployment {info.key}; predictions at /{namespace}/predictions/{name}/")


@realtime.command("list")
def list_deployments(ctx: typer.Context, namespace: str, as_json: AsJson = False) -> None:
    found = state(ctx).client().realtime.list_deployments(namespace)
    if as_json:
        print_json(found)
        return
    rows = [
        [r.name, r.spec.stream, r.spec.function, r.spec.model or "-", status_line(r.status)]
        for r in found
    ]  # a failed worker's traceback: its error line only, as 'deployments list' shows it
    table(None, ["name", "stream", "function", "model", "status"], rows)


@realtime.command("get")
def get(ctx: typer.Context, target: Name) -> None:
    print_json(state(ctx).client().realtime.get(*split_target(target)))


@realtime.command("delete")
def delete(ctx: typer.Context, target: Name) -> None:
    state(ctx).client().realtime.delete(*split_target(target))
    note(f"deleted realtime deployment {target}")


@realtime.command("lag")
def lag(ctx: typer.Context, target: Name) -> None:
    """Events and triggers not done yet, and the age of the oldest."""
    found = state(ctx).client().realtime.lag(*split_target(target))
    say(f"{int(found['events'])} pending, oldest {found['oldest_s']:.1f} s")


@realtime.command("dead-letters")
def dead_letters(
    ctx: typer.Context,
    target: Name,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Show at most this many.")] = 100,
    as_json: AsJson = False,
) -> None:
    """Triggers whose inference kept failing, with the last traceback's final line."""
    found = state(ctx).client().realtime.dead_letters(*split_target(target), limit=limit)
    if as_json:
        print_json(found)
        return
    rows = [
        [d.entity, d.event_id, str(d.attempts), d.error.strip().splitlines()[-1]] for d in found
    ]
    table(None, ["entity", "event", "attempts", "error"], rows)
    if len(found) == limit:  # the list stops here, not the dead letters
        note(f"the first {limit} dead letters: there may be more (--limit, up to 1000)")


@realtime.command("retry")
def retry(ctx: typer.Context, target: Name) -> None:
    """Queue every dead letter again."""
    retried = state(ctx).client().realtime.retry_dead_letters(*split_target(target))
    note(f"queued {retried} dead letters again")
