"""``events tail``: the event log as it happens."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from modelyard.cli.output import say
from modelyard.cli.state import state

app = typer.Typer(help="The event log.", no_args_is_help=True)


@app.command("tail")
def tail(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for new events.")] = False,
    type: Annotated[list[str] | None, typer.Option(help="Type pattern, e.g. model.*")] = None,
    after: Annotated[int | None, typer.Option(help="Start after this event id.")] = None,
    last: Annotated[
        int, typer.Option(min=0, help="Without --after: start with the newest N matching events.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Print events of the namespaces your key can read, oldest first."""
    who = state(ctx)
    # The server counts the last N among the events that pass the type filter.
    for event in who.client().events(after=after, last=last or None, types=type, follow=follow):
        if as_json:
            say(json.dumps(event.to_dict(), default=str))
        else:
            say(
                f"{event.id:>6} {event.created_at:%Y-%m-%d %H:%M:%S} ",
                (event.type, "bold"),
                f" {event.subject}",
                (f" {who.who(event.actor)}" if event.actor else "", "dim"),
            )
