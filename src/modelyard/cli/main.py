"""Entry point: global options map onto the settings; errors become one line and an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli import admin, artifacts, deployments, events, pipelines, slos
from modelyard.cli.state import State, errors
from modelyard.errors import ModelyardError

app = typer.Typer(
    name="modelyard",
    help="modelyard: an ML platform in one package.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Control plane URL (MODELYARD_URL).")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (MODELYARD_API_KEY).")] = None,
    home: Annotated[Path | None, typer.Option(help="Data folder (MODELYARD_HOME).")] = None,
    config: Annotated[Path | None, typer.Option(help="Config file (.toml or .yaml).")] = None,
) -> None:
    ctx.obj = State(flags={"url": url, "api_key": api_key, "home": home}, config_file=config)


app.command()(admin.up)
app.command()(admin.config)
app.add_typer(admin.namespaces, name="namespaces")
app.add_typer(admin.keys, name="keys")
app.add_typer(artifacts.artifact_app("model"), name="models")
app.add_typer(artifacts.artifact_app("dataset"), name="datasets")
app.add_typer(events.app, name="events")
app.add_typer(pipelines.pipelines, name="pipelines")
app.add_typer(pipelines.runs, name="runs")
app.add_typer(pipelines.schedules, name="schedules")
app.add_typer(deployments.app, name="deployments")
app.add_typer(slos.app, name="slos")


def main() -> None:
    try:
        app(standalone_mode=False)
    except ModelyardError as exc:
        errors.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        raise SystemExit(130) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
