"""The package's layers: no subsystem imports one that imports it back, and none imports the
composers that wire subsystems together.

Every ``import modelyard.X`` and ``from modelyard.X import ...`` under ``src/modelyard`` counts,
at the top of a module, in a function, or under ``TYPE_CHECKING``: a type is a dependency too. A
node is a first-level package (``serving``) or a top-level module (``settings``); ``modelyard``
is the root package itself (its public API). Edges that break the rules are listed in
`ALLOWED` with their reason; the list may only shrink (a listed edge that is gone fails too).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "modelyard"
ROOT = "modelyard"

COMPOSERS = frozenset(
    {ROOT, "__main__", "client", "controlplane", "api", "cli", "ui", "apps", "testing"}
)
"""They wire subsystems together and may import any of them; nothing else may import them. The
dashboard (``ui``) is an edge of the control plane like ``api`` (which mounts it) and reads every
service of a `ControlPlane`; the ``apps`` are examples built on the SDK; ``testing`` starts real
platforms for the tests and benchmarks."""

ALLOWED: dict[tuple[str, str], str] = {
    # the SDK, used by what runs outside the control plane ---------------------------------------
    ("serving", "client"): "a replica pulls its model version through the SDK (serving.server)",
    ("realtime", "client"): "realtime workers and replays read model versions through the SDK",
    ("sql", "client"): "an import commits its dataset version through the SDK, like any user",
    # the root package ----------------------------------------------------------------------------
    ("gateway", ROOT): "__version__ only (the Server header); the root is loaded first anyway",
    ("serving", ROOT): "__version__ only (the model server's metadata); as above",
    # cycles between subsystems -------------------------------------------------------------------
    ("realtime", "gateway"): (
        "realtime ingest is mounted in the gateway and authorizes with its routing table "
        "(realtime.ingest -> gateway.routes, gateway.app -> realtime.ingest)"
    ),
    ("serving", "realtime"): (
        "deployment names may not be the realtime routes' path segments "
        "(serving.deployments -> realtime.streams.check_not_reserved), while realtime workers "
        "load models with serving's runtimes"
    ),
    ("pipelines", "sql"): (
        "pipelines re-exports the sql_import task (lazily, in __init__), which is a pipeline "
        "step built with pipelines.dsl"
    ),
    ("settings", "kube"): (
        "the settings object holds the Kubernetes section (kube.config); the Kubernetes "
        "orchestrator is built from the settings"
    ),
    ("settings", "sql"): (
        "the settings object holds the named SQL connections (sql.connections); sql reaches "
        "the settings through the SDK"
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def node(dotted: str) -> str:
    """The layer of a module: ``modelyard.serving.http`` -> ``serving``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def imported(path: Path) -> set[str]:
    """The modelyard modules a file imports (``from modelyard import x`` names ``modelyard.x``
    when ``x`` is a module or package, else the root)."""
    found: set[str] = set()
    for item in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(item, ast.Import):
            found |= {a.name for a in item.names if a.name.split(".")[0] == ROOT}
        elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
            if item.module == ROOT:
                for alias in item.names:
                    child = SOURCE / alias.name
                    is_module = child.is_dir() or child.with_suffix(".py").exists()
                    found.add(f"{ROOT}.{alias.name}" if is_module else ROOT)
            elif item.module.split(".")[0] == ROOT:
                found.add(item.module)
    return found


def edges() -> dict[tuple[str, str], set[str]]:
    """(importer, imported) layer pairs, with the modules where the import is."""
    found: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted(SOURCE.rglob("*.py")):
        source = node(module_name(path))
        for target in {node(m) for m in imported(path)} - {source}:
            found[source, target].add(module_name(path))
    return dict(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_allowed_edges_all_exist_and_say_why() -> None:
    found = edges()
    stale = sorted(edge for edge in ALLOWED if edge not in found)
    assert not stale, f"allowed edges that no import makes any more, drop them: {stale}"
    assert all(reason.strip() for reason in ALLOWED.values())


def test_nothing_below_the_composers_imports_them() -> None:
    wrong = {
        edge: sorted(where)
        for edge, where in edges().items()
        if edge[1] in COMPOSERS and edge[0] not in COMPOSERS and edge not in ALLOWED
    }
    assert not wrong, f"subsystems importing composers: {wrong}"


def test_the_layers_have_no_cycles() -> None:
    found = edges()
    graph: defaultdict[str, set[str]] = defaultdict(set)
    for source, target in found:
        if (source, target) not in ALLOWED:
            graph[source].add(target)
    loops = cycles(graph)
    detail = {
        " <-> ".join(loop): {
            f"{a} -> {b}": sorted(found[a, b])
            for a in loop
            for b in loop
            if (a, b) in found and (a, b) not in ALLOWED
        }
        for loop in loops
    }
    assert not loops, f"import cycles between layers: {detail}"


def test_the_checker_sees_cycles_and_function_level_imports(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    module = tmp_path / "m.py"
    module.write_text(
        "from modelyard.serving import http\n"
        "import modelyard.kube.render\n"
        "def f():\n"
        "    from modelyard import client, __version__\n"
    )
    assert imported(module) == {
        "modelyard.serving",
        "modelyard.kube.render",
        "modelyard.client",
        ROOT,
    }
