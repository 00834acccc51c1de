"""The event catalogue is the whole list of event types: documented, and the only names emitted.

``python -m tests.events.test_catalogue`` rewrites ``docs/events.md`` from the catalogue.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import modelyard
from modelyard.events.types import CATALOGUE, EventType

SRC = Path(modelyard.__file__).resolve().parent
DOC = SRC.parent.parent / "docs" / "events.md"
CATALOGUE_MODULE = SRC / "events" / "types.py"
_HEADING = re.compile(r"^### `([^`]+)`$", re.M)

INTRO = """\
# Events

Every change appends an event in the same transaction as the change (see the README's Events
section for the stream and webhooks). This page lists every event type modelyard appends; it is
rendered from `modelyard.events.types.CATALOGUE` by `python -m tests.events.test_catalogue`, and a
test fails when the two differ.

Each event is a JSON object with `id`, `type` (below), `namespace` (null for keys), `subject`,
`data` (the fields listed under each type), `actor` (the id of the key that acted, null for the
platform's own controllers) and `created_at`. Webhooks and `?type=` filters match a type exactly,
`*`, or a prefix such as `rollout.*`.
"""


def render() -> str:
    parts = [INTRO]
    family = ""
    for event_type, doc in CATALOGUE.items():
        head = event_type.value.split(".")[0]
        if head != family:
            family = head
            parts.append(f"\n## {family}\n")
        parts.append(f"\n### `{event_type.value}`\n\n{doc.summary}\n\nSubject: `{doc.subject}`\n")
        if doc.data:
            parts.append("\n| field | type and meaning |\n| --- | --- |\n")
            parts.extend(f"| `{name}` | {_cell(meaning)} |\n" for name, meaning in doc.data.items())
        else:
            parts.append("\nNo data fields.\n")
    return "".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", r"\|")


def test_every_event_type_is_in_the_catalogue_once() -> None:
    assert list(CATALOGUE) == list(EventType)


def test_the_doc_lists_exactly_the_catalogue() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = _HEADING.findall(text)
    missing = [t.value for t in EventType if t.value not in documented]
    unknown = [t for t in documented if t not in {e.value for e in EventType}]
    assert not missing, f"not in docs/events.md: {missing}"
    assert not unknown, f"docs/events.md lists event types the catalogue lacks: {unknown}"
    assert text == render(), "docs/events.md is stale: run python -m tests.events.test_catalogue"


def test_no_string_names_an_event_type() -> None:
    """Outside the catalogue, an event type is a member: no literal, no f-string that makes one."""
    values = {t.value for t in EventType}
    found = []
    for path, tree in _sources():
        for node in _outside_annotations(tree):
            if isinstance(node, ast.Constant) and node.value in values:
                found.append(f"{path}:{node.lineno}: {node.value!r}")
            elif isinstance(node, ast.JoinedStr) and _makes_event_type(node, values):
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "use modelyard.events.types.EventType members:\n" + "\n".join(found)


def test_emitters_pass_catalogue_members() -> None:
    """``<...>.events.append(session, type, ...)`` gets a member, a mapping's member, or a
    parameter typed `EventType` that the caller filled with one."""
    found = []
    for path, tree in _sources():
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            params = {a.arg: a.annotation for a in function.args.args + function.args.kwonlyargs}
            for call in ast.walk(function):
                if not isinstance(call, ast.Call):
                    continue
                kind = _event_type_argument(call)
                if kind is None:
                    continue
                where = f"{path}:{call.lineno}"
                if isinstance(kind, ast.Name) and kind.id in params:
                    annotation = params[kind.id]
                    if annotation is None or ast.unparse(annotation) != "EventType":
                        found.append(f"{where}: parameter {kind.id!r} is not typed EventType")
                elif not _names_a_member(kind):
                    found.append(f"{where}: {ast.unparse(kind)}")
    assert not found, "emit catalogue members:\n" + "\n".join(found)


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for file in sorted(SRC.rglob("*.py")):
        relative = file.relative_to(SRC).as_posix()
        if file == CATALOGUE_MODULE:
            continue
        yield relative, ast.parse(file.read_text(encoding="utf-8"), str(file))


def _outside_annotations(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node but those of type annotations (``Literal["model.version.committed"]`` types a
    field; it emits nothing)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.AnnAssign | ast.arg):
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotations.append(node.returns)
        for annotation in annotations:
            if annotation is not None:
                skip.update(id(n) for n in ast.walk(annotation))
    return (n for n in ast.walk(tree) if id(n) not in skip)


def _makes_event_type(node: ast.JoinedStr, values: set[str]) -> bool:
    """Whether the f-string could spell an event type (``f"run.{state}"``): some of its literal
    text is a word of one, and filling the blanks with words gives one."""
    words = [str(p.value) for p in node.values if isinstance(p, ast.Constant)]
    if not any(re.search("[a-z]", word) for word in words):
        return False
    pattern = "".join(
        re.escape(str(part.value)) if isinstance(part, ast.Constant) else "[a-z_]+"
        for part in node.values
    )
    return any(re.fullmatch(pattern, value) for value in values)


def _names_a_member(node: ast.expr) -> bool:
    """A member (``EventType.X``), a mapping's (``REVISION_EVENTS[state]``), a variable, or a
    choice between those; never a string made here."""
    if isinstance(node, ast.IfExp):
        return _names_a_member(node.body) and _names_a_member(node.orelse)
    if isinstance(node, ast.Subscript):
        return _names_a_member(node.value)
    return isinstance(node, ast.Attribute | ast.Name)


def _event_type_argument(call: ast.Call) -> ast.expr | None:
    """The type argument of an event log append (``<...>.events.append(session, type, ...)``,
    inside a write transaction), or None when ``call`` is not one."""
    if not (
        isinstance(call.func, ast.Attribute)
        and call.func.attr == "append"
        and isinstance(call.func.value, ast.Attribute)
        and call.func.value.attr == "events"
        and call.args
        and isinstance(call.args[0], ast.Name)
        and call.args[0].id in ("session", "s")
    ):
        return None
    if len(call.args) >= 2:
        return call.args[1]
    return next((k.value for k in call.keywords if k.arg == "type"), None)


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")
