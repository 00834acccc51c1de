"""``events tail``: the event log as it happens."""

from __future__ import annotations

from typing import Annotated

import typer

from modelyard.cli.state import console, print_json, state

app = typer.Typer(help="The event log.", no_args_is_help=True)


@app.command("tail")
def tail(
    ctx: typer.Context,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for new events.")] = False,
    type: Annotated[list[str] | None, typer.Option(help="Type pattern, e.g. model.*")] = None,
    after: Annotated[int | None, typer.Option(help="Start after this event id.")] = None,
    last: Annotated[int, typer.Option(help="Without --after: start this many events back.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Print events of the namespaces your key can read, oldest first."""
    client = state(ctx).client()
    if after is None:
        newest = list(client.events(after=0, follow=False))
        after = newest[-last].id - 1 if len(newest) >= last > 0 else 0
    for event in client.events(after=after, types=type, follow=follow):
        if as_json:
            print_json(event.to_dict())
        else:
            console.print(
                f"{event.id:>6} {event.created_at:%Y-%m-%d %H:%M:%S} "
                f"[bold]{event.type}[/] {event.subject} "
                f"[dim]{event.actor or ''}[/]",
                highlight=False,
            )
