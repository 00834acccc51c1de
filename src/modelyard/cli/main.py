"""Entry point: global options map onto the settings; errors become one line and an exit code.

The command modules load when their command runs (``datasets import-sql`` imports neither the
deployments' nor the pipelines' records): a process starts in the time its own command needs.
``--help`` lists every command, and loads them all for their help lines.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from modelyard import __version__
from modelyard.cli.output import error
from modelyard.cli.state import State
from modelyard.errors import ModelyardError

# What a process stopped by a closed pipe (``modelyard runs logs ... | head``) exits with.
BROKEN_PIPE = 128 + 13

# Each command, in the order ``--help`` lists them: ``module:attribute``, a typer app (a group)
# or a function (a command), loaded on first use.
COMMANDS = {
    "up": "modelyard.cli.admin:up",
    "config": "modelyard.cli.admin:config",
    "migrate": "modelyard.cli.admin:migrate",
    "namespaces": "modelyard.cli.admin:namespaces",
    "keys": "modelyard.cli.admin:keys",
    "models": "modelyard.cli.artifacts:models",
    "datasets": "modelyard.cli.artifacts:datasets",
    "events": "modelyard.cli.events:app",
    "pipelines": "modelyard.cli.pipelines:pipelines",
    "runs": "modelyard.cli.pipelines:runs",
    "schedules": "modelyard.cli.pipelines:schedules",
    "deployments": "modelyard.cli.deployments:app",
    "slos": "modelyard.cli.slos:app",
    "streams": "modelyard.cli.realtime:streams",
    "realtime": "modelyard.cli.realtime:realtime",
}


class Commands(MutableMapping[str, Any]):
    """The root's commands by name: those of ``COMMANDS`` built on first access."""

    def __init__(self, built: MutableMapping[str, Any]) -> None:
        self.built = built

    def __getitem__(self, name: str) -> Any:
        if name not in self.built and name in COMMANDS:
            self.built[name] = _load(name)
        return self.built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self.built[name] = command

    def __delitem__(self, name: str) -> None:
        del self.built[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self.built if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self.built.keys())


class Root(TyperGroup):
    """The command tree, whose ``main`` turns every error into one line on stderr and an exit
    code (ModelyardError: its ``exit_code``; usage errors: 2). CliRunner calls this ``main``
    too, so tests see what a user sees."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = Commands(self.commands)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        code = self._run(args, prog_name, complete_var, windows_expand_args, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        windows_expand_args: bool,
        **extra: Any,
    ) -> int:
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except ModelyardError as exc:
            error(exc.message)
            return exc.exit_code
        except typer.TyperException as exc:
            # typer's own errors: usage errors and bad parameters, exit code 2. In typer 0.29
            # (pinned) they come from its vendored click: not click.ClickException.
            return _usage_error(exc)
        except typer.Abort:
            return 130
        # typer.Exit(code) comes back as its code; commands themselves return None
        return result if isinstance(result, int) else 0

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context, not public
        # Here, before typer's own handler, which would exit 1 for a reader that went away.
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(BROKEN_PIPE) from None

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names alone: typer's would build every command


def _load(name: str) -> Any:
    """The click command of ``COMMANDS[name]``, built by typer as ``app.add_typer`` or
    ``app.command`` would have built it."""
    module, _, attribute = COMMANDS[name].partition(":")
    target = getattr(importlib.import_module(module), attribute)
    holder = typer.Typer(pretty_exceptions_enable=False)
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    return typer.main.get_group(holder).commands[name]


def _usage_error(exc: typer.TyperException) -> int:
    message = exc.format_message().strip()
    if message:  # empty when typer printed the help itself (a group called without a command)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error(f"{message}{hint}")
    return exc.exit_code


def _silence_stdout() -> None:
    """After the reader went away, later writes (and the flush at exit) go nowhere instead of
    raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (CliRunner): nothing to flush at exit
        pass
    finally:
        os.close(devnull)


app = typer.Typer(
    name="modelyard",
    cls=Root,
    help="modelyard: an ML platform in one package.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"modelyard {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Control plane URL (MODELYARD_URL).")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (MODELYARD_API_KEY).")] = None,
    home: Annotated[Path | None, typer.Option(help="Data folder (MODELYARD_HOME).")] = None,
    config: Annotated[Path | None, typer.Option(help="Config file (.toml or .yaml).")] = None,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="Print the version."),
    ] = False,
) -> None:
    ctx.obj = State(flags={"url": url, "api_key": api_key, "home": home}, config_file=config)
    ctx.call_on_close(ctx.obj.close)  # in-process runs (tests) leave no connection open


def main() -> None:
    app()
