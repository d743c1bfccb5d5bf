"""The modules of ``model`` import each other one way only (DESIGN §3: no cycles, counting
imports inside functions).

A cycle held together by imports inside functions still runs, until someone moves one of them to
the top of a file or imports the modules in a different order; it also means no module of the
cycle can be read, tested or replaced without the others. Python will not tell us, so this test
reads every ``import`` of every file under ``model/`` with :mod:`ast`, at any depth (module
level, functions, ``if TYPE_CHECKING:`` blocks), and fails with the cycle it finds.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "model"
ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path, root: Path = ROOT) -> str:
    """``model/train.py`` -> ``model.train``; ``model/__init__.py`` -> ``model``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` (whose source is ``source``) imports,
    at any depth. ``from model import diffp`` imports the submodule ``model.diffp`` when there is
    one, else the package ``model`` itself; relative imports are resolved against ``name``."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{a.name}" for a in node.names]
            targets = [n for n in names if n in known]  # submodules
            if len(targets) < len(names):  # and names defined in ``base`` itself
                targets.append(base)
        else:
            continue
        for target in targets:
            # ``import model.collate.x`` reaches the deepest module of ours it names
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    return found


def import_graph(package_dir: Path, root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: the modules of the package it imports}`` over every ``.py`` file below
    ``package_dir``."""
    files = {module_name(p, root): p for p in sorted(package_dir.rglob("*.py"))}
    known = set(files)
    return {
        name: imported_modules(path.read_text(), name, path.name == "__init__.py", known)
        for name, path in files.items()
    }


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of ``graph`` (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

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
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest cycle ``[start, ..., start]`` through ``start`` inside ``within`` (breadth
    first); empty when there is none."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier and start not in parents:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w in within and w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    if start not in parents:
        return []
    path = [start]
    v = parents[start]
    while v != start:
        path.append(v)
        v = parents[v]
    return [start, *path[:0:-1], start]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module's shortest cycle, for the modules on one, each cycle once (as
    ``[a, b, ..., a]`` from its smallest name), sorted: enough to see every edge to cut."""
    cycles: dict[tuple[str, ...], list[str]] = {}
    for component in strongly_connected(graph):
        for v in sorted(component):
            cycle = shortest_cycle(graph, v, component)
            if cycle:
                ring = cycle[:-1]
                i = ring.index(min(ring))
                canonical = [*ring[i:], *ring[:i], ring[i]]
                cycles.setdefault(tuple(canonical), canonical)
    return sorted(cycles.values())


def test_model_imports_have_no_cycle():
    graph = import_graph(ROOT / PACKAGE)
    assert len(graph) > 5 and any(graph.values()), "found no modules or no imports: wrong root?"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in model/ (counting imports inside functions):\n" + "\n".join(
        "  " + " -> ".join(c) for c in cycles
    )


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    known = {"model", "model.a", "model.b", "model.c", "model.d"}
    source = (
        "import os\n"
        "from model import a\n"
        "def f():\n"
        "    from model.b import thing\n"
        "    if True:\n"
        "        import model.c.missing\n"
        "class K:\n"
        "    def g(self):\n"
        "        from .d import other\n"
        "        from . import nothing_of_ours\n"
    )
    got = imported_modules(source, "model.x", False, known)
    assert got == {"model", "model.a", "model.b", "model.c", "model.d"}


def test_find_cycles_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert sorted(find_cycles(graph)) == [["a", "b", "c", "a"], ["e", "e"]]  # a self-import too
    assert find_cycles({"a": {"b"}, "b": set()}) == []
