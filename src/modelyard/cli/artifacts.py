"""``models`` and ``datasets``: the same commands for both."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from modelyard.cli.state import (
    console,
    parse_pairs,
    print_json,
    state,
    table,
    transfer_progress,
)
from modelyard.client import scan_files
from modelyard.registry.records import VersionInfo
from modelyard.registry.versions import Lineage, LineageInput, VersionSpec
from modelyard.types import ArtifactKind, ModelRef


def _show_version(version: VersionInfo) -> None:
    console.print(
        f"[bold]{version.kind} {version.ref}[/]  committed {version.committed_at}  "
        f"by {version.created_by or '-'}"
    )
    for label, value in (
        ("aliases", ", ".join(version.aliases)),
        ("runtime", version.runtime),
        ("metrics", version.metrics),
        ("params", version.params),
        ("tags", version.tags),
        ("lineage", version.lineage),
        ("content", version.manifest_digest),
    ):
        if value:
            console.print(f"  {label}: {value}")
    table(
        "files",
        ["path", "size", "sha256"],
        [(f.path, f.size, f.sha256[:16]) for f in version.files],
    )


def artifact_app(kind: ArtifactKind) -> typer.Typer:
    app = typer.Typer(
        help=f"{kind.capitalize()}s: versioned, immutable once committed.", no_args_is_help=True
    )

    @app.command("push")
    def push(
        ctx: typer.Context,
        source: Annotated[Path, typer.Argument(help="A file, or a folder pushed whole.")],
        ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME")],
        description: Annotated[str, typer.Option()] = "",
        runtime: Annotated[str | None, typer.Option(help="Serving runtime name.")] = None,
        metric: Annotated[list[str] | None, typer.Option(help="NAME=NUMBER, repeatable")] = None,
        param: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable")] = None,
        tag: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable")] = None,
        input: Annotated[
            list[str] | None,
            typer.Option(help="Lineage input KIND:NS/NAME@N (model or dataset), repeatable"),
        ] = None,
        run: Annotated[str | None, typer.Option(help="Lineage: the producing run id.")] = None,
        alias: Annotated[
            str | None, typer.Option(help="Point this alias at the new version.")
        ] = None,
    ) -> None:
        """Upload files, verify and commit them as the next version."""
        try:
            metrics = {k: float(v) for k, v in parse_pairs(metric or [], "--metric").items()}
        except ValueError as exc:
            raise typer.BadParameter(f"--metric values must be numbers: {exc}") from exc
        inputs = []
        for item in input or []:
            input_kind, sep, input_ref = item.partition(":")
            if not sep or input_kind not in ("model", "dataset"):
                raise typer.BadParameter(f"--input {item!r}: write model:NS/NAME@N or dataset:…")
            inputs.append(LineageInput(kind=input_kind, ref=input_ref))
        spec = VersionSpec(
            description=description,
            runtime=runtime,
            metrics=metrics,
            params=dict(parse_pairs(param or [], "--param")),
            tags=parse_pairs(tag or [], "--tag"),
            lineage=Lineage(run=run, inputs=inputs),
        )
        total = sum(entry.size for _, entry in scan_files(source))
        with transfer_progress(f"push {ref}", total) as progress:
            version = (
                state(ctx)
                .client()
                .push(ref, source, spec, kind=kind, alias=alias, progress=progress)
            )
        console.print(
            f"committed [bold]{version.ref}[/] ({len(version.files)} files, "
            f"{version.size_bytes} bytes)" + (f", alias {alias}" if alias else "")
        )

    @app.command("list")
    def list_(
        ctx: typer.Context, namespace: str, as_json: Annotated[bool, typer.Option("--json")] = False
    ) -> None:
        found = state(ctx).client().list_artifacts(namespace, kind=kind)
        if as_json:
            print_json([a.to_dict() for a in found])
            return
        table(
            f"{kind}s in {namespace}",
            ["name", "latest", "aliases", "description"],
            [
                (
                    a.name,
                    a.latest_version,
                    ", ".join(f"{k}→{v}" for k, v in a.aliases.items()),
                    a.description,
                )
                for a in found
            ],
        )

    @app.command("show")
    def show(
        ctx: typer.Context,
        ref: Annotated[str, typer.Argument(help="NS/NAME (all versions) or NS/NAME@REF")],
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        client = state(ctx).client()
        if "@" in ref:
            version = client.get_version(ref, kind=kind)
            print_json(version.to_dict()) if as_json else _show_version(version)
            return
        versions = client.list_versions(ref, kind=kind)
        if as_json:
            print_json([v.to_dict() for v in versions])
            return
        table(
            f"{kind} {ref}",
            ["version", "aliases", "runtime", "size", "committed"],
            [
                (v.number, ", ".join(v.aliases), v.runtime, v.size_bytes, v.committed_at)
                for v in versions
            ],
        )

    @app.command("pull")
    def pull(
        ctx: typer.Context,
        ref: Annotated[str, typer.Argument(help="NS/NAME[@VERSION|ALIAS]")],
        dest: Annotated[
            Path | None,
            typer.Option(help="Also copy the files here (the cache keeps them either way)."),
        ] = None,
    ) -> None:
        """Download a version into the local cache, verifying every digest."""
        client = state(ctx).client()
        version = client.get_version(ref, kind=kind)
        with transfer_progress(f"pull {version.ref}", version.size_bytes) as progress:
            folder = client.pull(ModelRef.parse(version.ref), kind=kind, progress=progress)
        if dest is not None:
            shutil.copytree(
                folder,
                dest,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(".modelyard-version.json"),
            )
            folder = dest
        console.print(f"{version.ref} is in {folder}")

    @app.command("alias")
    def alias(
        ctx: typer.Context,
        ref: Annotated[str, typer.Argument(help="NS/NAME@VERSION to point the alias at")],
        name: Annotated[str, typer.Argument(help="The alias, e.g. production")],
        delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
        history: Annotated[bool, typer.Option("--history", help="Show its moves.")] = False,
    ) -> None:
        """Move an alias to a version in one step (or delete it, or show its history)."""
        client = state(ctx).client()
        base = ref.split("@", 1)[0]
        if history:
            table(
                f"{base}@{name}",
                ["at", "from", "to", "by"],
                [
                    (c.at, c.previous, c.version, c.actor)
                    for c in client.alias_history(base, name, kind=kind)
                ],
            )
            return
        if delete:
            change = client.delete_alias(base, name, kind=kind)
            console.print(f"deleted alias {name} (was version {change.previous})")
            return
        change = client.set_alias(ref, name, kind=kind)
        console.print(
            f"{base}@{name} -> version {change.version}"
            + (f" (was {change.previous})" if change.previous else "")
        )

    return app
