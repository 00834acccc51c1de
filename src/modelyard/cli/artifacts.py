"""``models`` and ``datasets``: the same commands for both."""

from __future__ import annotations

import difflib
import shutil
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Annotated, Any

import typer

from modelyard.cli.options import AsJson
from modelyard.cli.output import cell, print_json, say, table, transfer_progress
from modelyard.cli.sql import import_sql
from modelyard.cli.state import State, parse_pairs, state
from modelyard.client import scan_files
from modelyard.errors import InvalidInput
from modelyard.registry.records import Lineage, LineageInput, VersionInfo, VersionSpec
from modelyard.types import ArtifactKind, FileEntry, ModelRef


def check_servable(runtime: str, entries: Sequence[FileEntry]) -> None:
    """Refuse what could never serve: an unknown runtime (a typo), a built-in runtime's model
    file missing, ambiguous or empty."""
    from modelyard.serving.runtimes import RUNTIMES, runtime_names

    names = runtime_names()
    if runtime not in names:
        close = difflib.get_close_matches(runtime, names, n=1)
        raise InvalidInput(
            f"unknown runtime {runtime!r}: "
            + (f"did you mean {close[0]!r}? " if close else "")
            + f"(installed here: {', '.join(names)}; --no-check pushes it anyway, for a "
            "runtime installed only where it serves)"
        )
    try:
        model_file = RUNTIMES.load(runtime).model_file
    except InvalidInput:  # installed but not loadable here: the replica will say why
        return
    if model_file is None:
        return
    preferred, patterns = model_file
    top = {e.path: e for e in entries if "/" not in e.path}
    chosen = top.get(preferred)
    if chosen is None:
        found = [e for path, e in top.items() if any(fnmatch(path, p) for p in patterns)]
        if len(found) != 1:
            wanted = preferred + (f" or the one {' or '.join(patterns)} file" if patterns else "")
            pushed = ", ".join(sorted(e.path for e in entries)[:5]) + (
                ", ..." if len(entries) > 5 else ""
            )
            raise InvalidInput(
                f"the {runtime} runtime loads {wanted} of the version's top folder; "
                + (
                    f"there are {len(found)} ({', '.join(e.path for e in found)}): name the "
                    f"one to serve {preferred}"
                    if found
                    else f"the files pushed are {pushed}"
                )
            )
        chosen = found[0]
    if chosen.size == 0:
        raise InvalidInput(
            f"{chosen.path} is empty (0 bytes): the {runtime} runtime cannot load it"
        )


def _lineage(lineage: dict[str, Any]) -> str:
    parts = []
    if lineage.get("run"):
        step = f", step {lineage['step']}" if lineage.get("step") else ""
        parts.append(f"run {lineage['run']}{step}")
    inputs = [f"{i['kind']} {i['ref']}" for i in lineage.get("inputs", [])]
    if inputs:
        parts.append("read " + ", ".join(inputs))
    return "; ".join(parts)


def _tensors(signature: dict[str, Any], key: str) -> str:
    """A signature's inputs or outputs in one line: ``input-0 FP64 [-1, 4]``; outputs that a
    request gets only by naming them say so."""
    defaults = signature.get("default_outputs")
    parts = []
    for spec in signature.get(key) or []:
        if not isinstance(spec, dict):
            continue
        text = f"{spec.get('name')} {spec.get('datatype')} {spec.get('shape')}"
        if key == "outputs" and isinstance(defaults, list) and spec.get("name") not in defaults:
            text += " (when asked)"
        parts.append(text)
    return "; ".join(parts) or "(none)"


def _show_version(version: VersionInfo, who: State) -> None:
    say(
        (f"{version.kind} {version.ref}", "bold"),
        f"  committed {version.committed_at:%Y-%m-%d %H:%M:%S} UTC"
        if version.committed_at
        else f"  {version.state}",
        f"  by {who.who(version.created_by)}",
    )
    for label, value in (
        ("description", version.description),
        ("aliases", ", ".join(version.aliases)),
        ("runtime", version.runtime),
        ("takes", _tensors(version.signature, "inputs") if version.signature else ""),
        ("answers", _tensors(version.signature, "outputs") if version.signature else ""),
        ("metrics", cell(version.metrics)),
        ("params", cell(version.params)),
        ("tags", cell(version.tags)),
        ("lineage", _lineage(version.lineage)),
        ("content", version.manifest_digest),
    ):
        if value:
            say(f"  {label}: {value}")
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
        force: Annotated[
            bool,
            typer.Option(
                "--force", help="Commit a new version even when the latest holds the same files."
            ),
        ] = False,
        no_check: Annotated[
            bool,
            typer.Option(
                "--no-check", help="Skip the checks of the runtime's name and its model file."
            ),
        ] = False,
        sample: Annotated[
            Path | None,
            typer.Option(
                help="An input (.json request body or rows, .npy, .npz) run through the runtime "
                "here: the version's signature records its inputs and outputs.",
            ),
        ] = None,
    ) -> None:
        """Upload files, verify and commit them as the next version (unless the latest version
        holds the same files with the same runtime: then nothing is pushed)."""
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
        target = ModelRef.parse(ref)
        files = scan_files(source)
        entries = [entry for _, entry in files]
        if runtime is not None and not no_check:
            check_servable(runtime, entries)
        if sample is not None:
            if runtime is None:
                raise typer.BadParameter("--sample needs --runtime: the runtime runs the sample")
            from modelyard.serving.signatures import infer_signature

            spec.signature = infer_signature(source, runtime, sample)
            say(f"signature: takes {_tensors(spec.signature, 'inputs')}")
            say(f"  answers {_tensors(spec.signature, 'outputs')}")
        client = state(ctx).client()
        same = None if force else client.identical_latest(target, entries, spec, kind=kind)
        if same is not None:
            if alias is not None:
                client.set_alias(same.ref, alias, kind=kind)
            say(
                f"identical to {same.ref} (same files, runtime and signature): nothing pushed"
                + (f"; alias {alias} -> version {same.number}" if alias else "")
                + " (--force commits a new version anyway)"
            )
            return
        total = sum(entry.size for _, entry in files)
        with transfer_progress(f"push {ref}", total) as progress:
            version = client.push(
                target, source, spec, kind=kind, alias=alias, progress=progress, files=files
            )
        say(
            "committed ",
            (version.ref, "bold"),
            f" ({len(version.files)} files, {version.size_bytes} bytes)"
            + (f", alias {alias}" if alias else ""),
        )

    @app.command("list")
    def list_(ctx: typer.Context, namespace: str, as_json: AsJson = False) -> None:
        """The namespace's names, with their latest version and aliases."""
        found = state(ctx).client().list_artifacts(namespace, kind=kind)
        if as_json:
            print_json(found)
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
        as_json: AsJson = False,
    ) -> None:
        """Every version of NS/NAME, or one version's metadata and files (NS/NAME@REF)."""
        client = state(ctx).client()
        if "@" in ref:
            version = client.get_version(ref, kind=kind)
            print_json(version) if as_json else _show_version(version, state(ctx))
            return
        versions = client.list_versions(ref, kind=kind)
        if as_json:
            print_json(versions)
            return
        table(
            f"{kind} {ref}",
            ["version", "aliases", "runtime", "size", "committed (UTC)"],
            [
                (
                    v.number,
                    ", ".join(v.aliases),
                    v.runtime,
                    v.size_bytes,
                    f"{v.committed_at:%Y-%m-%d %H:%M:%S}" if v.committed_at else v.state,
                )
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
        say(f"{version.ref} is in {folder}")

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
            who = state(ctx)
            table(
                f"{base}@{name}",
                ["at (UTC)", "from", "to", "by"],
                [
                    (f"{c.at:%Y-%m-%d %H:%M:%S}", c.previous, c.version, who.who(c.actor))
                    for c in client.alias_history(base, name, kind=kind)
                ],
            )
            return
        if delete:
            change = client.delete_alias(base, name, kind=kind)
            say(f"deleted alias {name} (was version {change.previous})")
            return
        change = client.set_alias(ref, name, kind=kind)
        say(
            f"{base}@{name} -> version {change.version}"
            + (f" (was {change.previous})" if change.previous else "")
        )

    return app


models = artifact_app("model")
datasets = artifact_app("dataset")
datasets.command("import-sql")(import_sql)
