"""The package's import graph: no import cycles, and no library module imports the CLI.

The graph is read from the source (``ast``), so it holds every import a module can make,
at the top or inside a function (a lazy import still ties two modules into one unit);
imports under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG_DIR = Path(__file__).resolve().parents[1] / "src" / "napari_slads_eds"
PKG = "napari_slads_eds"


def _module_files() -> dict[str, Path]:
    mods = {}
    for p in PKG_DIR.rglob("*.py"):
        parts = list(p.relative_to(PKG_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Yield the Import/ImportFrom nodes of ``tree``, skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, dict[str, int]]:
    """{module: {imported package module: line}} for every module of the package."""
    mods = _module_files()
    graph = {}
    for name, path in mods.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        out: dict[str, int] = {}
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # "from . import jobs" imports the module jobs; "from .x import f" the module x
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for t in targets:
                while t and t not in mods and t.startswith(PKG + "."):
                    t = t.rsplit(".", 1)[0]      # "import napari_slads_eds.x.f" -> the module x
                if t in mods and t != name:
                    out.setdefault(t, node.lineno)
        graph[name] = out
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        cycles.append(frozenset(comp))
    return cycles


def _describe(cycle: frozenset[str], graph) -> str:
    edges = [f"{a} -> {b} (line {graph[a][b]})" for a in sorted(cycle) for b in graph[a] if b in cycle]
    return "; ".join(edges)


def _is_cli(mod: str) -> bool:
    return mod == f"{PKG}.cli" or mod.startswith(f"{PKG}.cli.")


def cli_importers(graph) -> set[str]:
    """Modules outside the CLI (and its ``__main__`` entry point) that import the CLI."""
    return {m for m, deps in graph.items()
            if not _is_cli(m) and m != f"{PKG}.__main__" and any(_is_cli(d) for d in deps)}


# The progress bars and the result table live in _console, used by the CLI and replay alike:
# no library module imports the CLI, and there is no import cycle.
KNOWN_CYCLES: list = []
KNOWN_CLI_IMPORTERS: set = set()


def test_the_walker_sees_the_package_and_its_imports():
    graph = import_graph()
    assert f"{PKG}.engine" in graph and f"{PKG}._widgets.sampling" in graph
    assert f"{PKG}._validation" in graph[f"{PKG}.jobs"]            # a top-level "from ._validation import"
    assert f"{PKG}.classifier" in graph[f"{PKG}.training_jobs"]    # a lazy import inside a job
    assert f"{PKG}.engine" in graph[f"{PKG}._widgets._session"]    # "from ..engine import"


def test_the_walker_finds_a_cycle_and_skips_type_checking_imports(tmp_path):
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert import_cycles(graph) == [frozenset({"a", "b", "c"})]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import cli\n"
                     "def f():\n    from . import jobs\n")
    names = [n.names[0].name for n in _imports(tree)]
    assert sorted(names) == ["TYPE_CHECKING", "jobs"]


def test_no_import_cycle_besides_the_known_one():
    graph = import_graph()
    new = [c for c in import_cycles(graph) if c not in KNOWN_CYCLES]
    assert new == [], "import cycles: " + " | ".join(_describe(c, graph) for c in new)


def test_no_import_cycle_at_all():
    graph = import_graph()
    cycles = import_cycles(graph)
    assert cycles == [], " | ".join(_describe(c, graph) for c in cycles)


def test_no_library_module_imports_the_cli_besides_the_known_one():
    assert cli_importers(import_graph()) - KNOWN_CLI_IMPORTERS == set()


def test_no_library_module_imports_the_cli():
    assert cli_importers(import_graph()) == set()


def test_engine_and_jobs_are_not_a_cycle():
    # The engine owns the process and its protocol (JobContext, JobCancelled); jobs own the
    # work.  The engine imports jobs inside the child; jobs never import the engine.
    graph = import_graph()
    assert f"{PKG}.jobs" in graph[f"{PKG}.engine"]
    assert f"{PKG}.engine" not in graph[f"{PKG}.jobs"]
