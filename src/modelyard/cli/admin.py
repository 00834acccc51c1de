"""``up``, ``config``, ``namespaces`` and ``keys``."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from modelyard.cli.state import console, errors, print_json, state, table
from modelyard.types import Role

namespaces = typer.Typer(help="Namespaces: each team's isolated space.", no_args_is_help=True)
keys = typer.Typer(help="API keys and their roles per namespace.", no_args_is_help=True)


def up(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="Data folder (MODELYARD_HOME).")] = None,
    api_port: Annotated[int | None, typer.Option(help="Port of the API.")] = None,
    api_host: Annotated[str | None, typer.Option(help="Address the API binds.")] = None,
    gateway_port: Annotated[int | None, typer.Option(help="Port of the gateway.")] = None,
    access_log: Annotated[
        bool, typer.Option(help="The gateway logs every request (gateway.log).")
    ] = False,
) -> None:
    """Run the control plane and the gateway in the foreground until Ctrl-C."""
    from modelyard.api.server import serve
    from modelyard.controlplane import ControlPlane
    from modelyard.gateway.process import GatewayProcess

    loaded = state(ctx).loaded(
        home=home, api_port=api_port, api_host=api_host, gateway_port=gateway_port
    )
    settings = loaded.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # replica health checks, twice a second
    plane = ControlPlane.build(settings)
    plane.orchestrator.launcher.warm()  # replicas fork from it: have its imports done by then
    if plane.ensure_admin_key():
        console.print(
            f"[bold]Created an admin API key[/] and wrote it to "
            f"{settings.admin_key_path} (mode 0600). The CLI and SDK read it from there."
        )
    console.print(
        f"modelyard control plane on http://{settings.api_host}:{settings.api_port} "
        f"(database {plane.db.engine.url.render_as_string(hide_password=True)}, "
        f"blobs {settings.blob_url})"
    )
    gateway = GatewayProcess(
        settings.home, settings.gateway_host, settings.gateway_port, access_log=access_log
    )
    plane.api_url = f"http://127.0.0.1:{settings.api_port}"
    # uvicorn shuts down on SIGTERM, then raises it again: end through the finally below, which
    # stops the gateway (the default action would kill this process first).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        gateway_env = plane.gateway_env()
        console.print(f"modelyard gateway on {gateway.start(gateway_env)}")
        gateway.watch(gateway_env)
        serve(plane, settings.api_host, settings.api_port)
    finally:
        try:
            plane.close()
        finally:
            gateway.stop()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def config(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the effective settings and where each value came from."""
    loaded = state(ctx).loaded()
    values = loaded.settings.model_dump(mode="json")
    if values.get("api_key"):
        values["api_key"] = "**********"
    if as_json:
        print_json({k: {"value": v, "origin": loaded.origins[k]} for k, v in values.items()})
        return
    table(
        f"settings (config file: {loaded.config_file or 'none'})",
        ["setting", "value", "origin"],
        [(k, v, loaded.origins[k]) for k, v in values.items()],
    )


@namespaces.command("list")
def list_namespaces(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """The namespaces your key has a role in."""
    found = state(ctx).client().list_namespaces()
    if as_json:
        print_json([n.to_dict() for n in found])
        return
    table(
        "namespaces",
        ["name", "description", "created"],
        [(n.name, n.description, n.created_at.isoformat(timespec="seconds")) for n in found],
    )


@namespaces.command("create")
def create_namespace(
    ctx: typer.Context, name: str, description: Annotated[str, typer.Option()] = ""
) -> None:
    """Create a namespace (admin key)."""
    created = state(ctx).client().create_namespace(name, description)
    console.print(f"created namespace [bold]{created.name}[/]")


@keys.command("list")
def list_keys(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    found = state(ctx).client().list_keys()
    if as_json:
        print_json([k.to_dict() for k in found])
        return
    table(
        "keys",
        ["id", "name", "admin", "roles", "revoked"],
        [
            (
                k.id,
                k.name,
                k.admin,
                ", ".join(f"{ns}:{r.value}" for ns, r in k.roles.items()),
                k.revoked_at,
            )
            for k in found
        ],
    )


@keys.command("create")
def create_key(
    ctx: typer.Context,
    name: str,
    role: Annotated[
        list[str] | None,
        typer.Option(
            help="NAMESPACE=ROLE, ROLE one of viewer, editor, admin, invoker; repeatable."
        ),
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="A global admin key.")] = False,
) -> None:
    """Create a key. It is printed once: store it now."""
    roles: dict[str, Role | str] = {}
    for item in role or []:
        namespace, sep, value = item.partition("=")
        if not sep or value not in {r.value for r in Role}:
            raise typer.BadParameter(
                f"--role {item!r}: write NAMESPACE=viewer|editor|admin|invoker"
            )
        roles[namespace] = Role(value)
    info, token = state(ctx).client().create_key(name, roles, admin=admin)
    errors.print(f"created key {info.id}; it is shown only now:")
    console.print(token, markup=False, highlight=False)


@keys.command("revoke")
def revoke_key(ctx: typer.Context, key_id: str) -> None:
    info = state(ctx).client().revoke_key(key_id)
    console.print(f"revoked key {info.id} ({info.name})")
