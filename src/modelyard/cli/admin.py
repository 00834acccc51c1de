"""``up``, ``config``, ``namespaces`` and ``keys``."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from modelyard.cli.options import AsJson
from modelyard.cli.output import note, print_json, say, table
from modelyard.cli.state import state
from modelyard.settings import forget_url, record_url
from modelyard.types import Role

LEASE_LOST_EXIT = 75
"""``modelyard up`` exits with it (EX_TEMPFAIL) when it lost the lease: start it again."""

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
    plane.orchestrator.warm()
    if plane.ensure_admin_key():
        say(
            ("Created an admin API key", "bold"),
            f" and wrote it to {settings.admin_key_path} (mode 0600). "
            "The CLI and SDK read it from there.",
        )
    say(
        f"modelyard control plane on http://{settings.api_host}:{settings.api_port} "
        f"(database {plane.db.engine.url.render_as_string(hide_password=True)}, "
        f"blobs {settings.blob_url})"
    )
    gateway = GatewayProcess(
        settings.home, settings.gateway_host, settings.gateway_port, access_log=access_log
    )
    plane.api_url = f"http://127.0.0.1:{settings.api_port}"
    lost: list[str] = []

    def leave(why: str) -> None:
        # The controllers stopped already; a fresh process starts as a standby, with no state
        # left from its time as the leader. SIGTERM ends uvicorn, then the finally below.
        lost.append(why)
        os.kill(os.getpid(), signal.SIGTERM)

    plane.on_lease_lost = leave
    # uvicorn shuts down on SIGTERM, then raises it again: end through the finally below, which
    # stops the gateway (the default action would kill this process first).
    signal.signal(signal.SIGTERM, _exit_on_signal)
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    url = f"http://{host}:{settings.api_port}"
    try:
        gateway_env = plane.gateway_env()
        say(f"modelyard gateway on {gateway.start(gateway_env)}")
        gateway.watch(gateway_env)
        # once it accepts: for clients given this home and no URL
        serve(
            plane,
            settings.api_host,
            settings.api_port,
            listening=lambda _: record_url(settings.home, url),
        )
    finally:
        forget_url(settings.home, url)
        try:
            plane.close()
        finally:
            gateway.stop()
        if lost:
            note(f"exiting: this control plane lost its lease ({lost[0]})")
            raise SystemExit(LEASE_LOST_EXIT)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def migrate(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option(help="Data folder (MODELYARD_HOME).")] = None,
) -> None:
    """Bring the database schema to the newest revision, then exit: what a job runs before the
    control planes start when they do not migrate themselves (MODELYARD_MIGRATE_ON_START=false)."""
    from modelyard.store.db import Database

    settings = state(ctx).loaded(home=home).settings
    db = Database(settings.database_url)
    try:
        db.migrate()
    finally:
        db.dispose()
    say(f"database {db.engine.url.render_as_string(hide_password=True)} is up to date")


def config(
    ctx: typer.Context,
    as_json: AsJson = False,
) -> None:
    """Show the effective settings and where each value came from."""
    loaded = state(ctx).loaded()
    settings = loaded.settings
    values = settings.model_dump(mode="json")
    origins = dict(loaded.origins)
    if values.get("api_key"):
        values["api_key"] = "**********"  # never the key itself
    elif settings.resolved_api_key():
        values["api_key"] = "**********"
        origins["api_key"] = f"file {settings.admin_key_path}"
    if as_json:
        print_json({k: {"value": v, "origin": origins[k]} for k, v in values.items()})
        return
    table(
        f"settings (config file: {loaded.config_file or 'none'})",
        ["setting", "value", "origin"],
        [(k, v, origins[k]) for k, v in values.items()],
    )


@namespaces.command("list")
def list_namespaces(ctx: typer.Context, as_json: AsJson = False) -> None:
    """The namespaces your key has a role in."""
    found = state(ctx).client().list_namespaces()
    if as_json:
        print_json(found)
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
    say("created namespace ", (created.name, "bold"))


@keys.command("list")
def list_keys(ctx: typer.Context, as_json: AsJson = False) -> None:
    """The keys your key may manage (every key, for an admin key)."""
    found = state(ctx).client().list_keys()
    if as_json:
        print_json(found)
        return
    table(
        "keys",
        ["id", "name", "admin", "roles", "expires (UTC)", "revoked (UTC)"],
        [
            (
                k.id,
                k.name,
                k.admin,
                ", ".join(f"{ns}:{r.value}" for ns, r in k.roles.items()),
                f"{k.expires_at:%Y-%m-%d %H:%M}" if k.expires_at else "",
                f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
            )
            for k in found
        ],
    )


_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, now: dt.datetime) -> dt.datetime:
    """``30d``, ``12h``, ``90m``, ``2w`` from ``now``; or an ISO date (00:00 UTC that day) or
    date and time (UTC unless it says otherwise)."""
    amount, unit = text[:-1], text[-1:]
    if amount.isdigit() and unit in _UNITS:
        return now + dt.timedelta(**{_UNITS[unit]: int(amount)})
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"--expires {text!r}: write a duration (30d, 12h, 90m, 2w) or a date (2027-01-31)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


@keys.command("create")
def create_key(
    ctx: typer.Context,
    name: str,
    role: Annotated[
        list[str] | None,
        typer.Option(
            help="NAMESPACE=ROLE, ROLE one of viewer, editor, admin, invoker, producer; repeatable."
        ),
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="A global admin key.")] = False,
    expires: Annotated[
        str | None,
        typer.Option(
            help="Refused from then on: a duration (30d, 12h, 90m, 2w) or a date (2027-01-31, "
            "00:00 UTC) or date and time."
        ),
    ] = None,
) -> None:
    """Create a key. It is printed once: store it now."""
    roles: dict[str, Role | str] = {}
    for item in role or []:
        namespace, sep, value = item.partition("=")
        if not sep or value not in {r.value for r in Role}:
            raise typer.BadParameter(
                f"--role {item!r}: write NAMESPACE=viewer|editor|admin|invoker|producer"
            )
        roles[namespace] = Role(value)
    expires_at = parse_expiry(expires, dt.datetime.now(dt.UTC)) if expires else None
    info, token = state(ctx).client().create_key(name, roles, admin=admin, expires_at=expires_at)
    until = f", expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""
    note(f"created key {info.name} ({info.id}{until}); it is shown only now:")
    say(token)


@keys.command("revoke")
def revoke_key(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key's id, or its name when no other has it.")],
) -> None:
    """Revoke a key: the API and the gateway refuse it from now on."""
    info = state(ctx).client().revoke_key(key)
    say(f"revoked key {info.name} ({info.id})")
