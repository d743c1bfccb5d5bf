"""The layers hold: imports point down only, jobs are peers, and no module circle exists.

Every import counts, including those inside functions (a lazy import is still a dependency).
The picture this checks is drawn in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> its layer; a package may import its own layer's members only where listed below
LAYERS = {
    "manifests": 0,  # the data contract
    "engine": 1,  # partitions, work dir, Ray session, runner, job skeleton
    "reports": 1,  # the HTML page kit: a presentation layer over the data contract
    "curation": 2,  # the jobs and the mixtures, peers
    "export": 2,  # vl3data export: shard sets to trainers' layouts, through manifests only
    "recaption": 2,
    "video_prep": 2,
    "mixtures": 2,
    "ingest": 2,  # vl3data import: public datasets as shard sets
    "model": 3,  # the trainer reads through mixtures and manifests
    "vl3data": 4,  # the CLI and the build graph
}
#: imports allowed between packages of the same layer
PEERS_ALLOWED: set[tuple[str, str]] = {
    # an imported video is sampled by the video job's own sampler (1 fps, uniform cap, same
    # timestamps), so imported video sets have frame parity with ours
    ("ingest", "video_prep"),
    # an imported image is held to curation's decode safety caps (Probe, Decode): the same
    # pixel cap, truncation check and re-encoding of odd modes as a curated image
    ("ingest", "curation"),
    # raw videos' clip captions go through recaption's engines, quality gates and retries
    # (video_prep.clip_captions); recaption never imports video_prep
    ("video_prep", "recaption"),
}


def _package_files() -> dict[str, Path]:
    """module name -> file, for every module of our packages."""
    mods = {}
    for pkg in LAYERS:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _imports(mod: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``mod`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            # the longest known module the name starts with (``a.b.c`` -> ``a.b`` if a module)
            parts = name.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in known:
                    if cand != mod:
                        out.add(cand)
                    break
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _package_files()
    known = set(mods)
    return {m: _imports(m, f, known) for m, f in mods.items()}


def test_imports_point_down(graph):
    bad = []
    for mod, deps in graph.items():
        src = mod.split(".")[0]
        for dep in deps:
            dst = dep.split(".")[0]
            if src == dst:
                continue
            if LAYERS[dst] > LAYERS[src] or (
                LAYERS[dst] == LAYERS[src] and (src, dst) not in PEERS_ALLOWED
            ):
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layers (docs/ARCHITECTURE.md):\n" + "\n".join(sorted(bad))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One module cycle, if any (iterative DFS, three colours)."""
    colour: dict[str, int] = defaultdict(int)
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[nxt] == 1:
                return [*path[path.index(nxt) :], nxt]
            elif colour[nxt] == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
                path.append(nxt)
    return None


def test_no_module_cycles(graph):
    # a package's __init__ importing its own submodules is how packages re-export: not a cycle
    edges = {
        m: {d for d in deps if not (m == d.rsplit(".", 1)[0] or d == m.rsplit(".", 1)[0])}
        for m, deps in graph.items()
    }
    cycle = _cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_sees_lazy_and_upward_imports(tmp_path):
    """The checker itself: an import inside a function is found, and a cycle is reported."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from curation.curate import curate\n    import engine.job\n")
    assert _imports("manifests.m", f, {"curation.curate", "engine.job"}) == {
        "curation.curate",
        "engine.job",
    }
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
