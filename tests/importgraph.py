"""The import graph of the ``rlroute`` package, read with :mod:`ast` (nothing is imported).

Every ``import``/``from ... import`` statement that names an ``rlroute`` module counts: at module level,
under ``if TYPE_CHECKING:``, or inside a function (a lazy import that hides a cycle is still a cycle).
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg`` (its
``__init__``). Imports by string (``importlib.import_module`` in the CLI and bench dispatch tables, the
policy registry's ``_target_`` strings) are not statements and are not counted.

Run as a script to print the cycles and the package-level dependency edges::

    python tests/importgraph.py
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "rlroute"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (packages by their ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the ``rlroute`` modules it imports anywhere in its source."""
    files = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import rlroute.a.b` of a non-module attribute path
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan): the sets of modules that
    import each other, directly or through others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(comps)


def cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """One concrete cycle through a strongly connected component (breadth-first back to its start)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def package_edges(graph: dict[str, set[str]], depth: int = 2) -> dict[str, set[str]]:
    """The graph collapsed to packages ``rlroute.<a>`` (depth 2) or ``rlroute.<a>.<b>`` (depth 3)."""
    def pkg(m: str) -> str:
        return ".".join(m.split(".")[:depth])

    out: dict[str, set[str]] = defaultdict(set)
    for a, bs in graph.items():
        for b in bs:
            if pkg(a) != pkg(b):
                out[pkg(a)].add(pkg(b))
    return out


def main() -> None:
    graph = import_graph()
    found = components(graph)
    print(f"modules: {len(graph)}  import edges: {sum(map(len, graph.values()))}  "
          f"import cycles (strongly connected sets): {len(found)}  modules in them: {sum(map(len, found))}")
    for comp in found:
        short = [m.removeprefix("rlroute.") for m in cycle_in(graph, set(comp))]
        inner = sorted(f"{a.removeprefix('rlroute.')} -> {b.removeprefix('rlroute.')}"
                       for a in comp for b in graph[a] if b in comp)
        print(f"  cycle: {' -> '.join(short)}   (set of {len(comp)}; edges inside: {'; '.join(inner)})")
    packages = package_edges(graph, depth=int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    pgraph = {p: set(packages.get(p, ())) for p in set(packages) | {b for bs in packages.values() for b in bs}}
    for comp in components(pgraph):
        print(f"  package cycle (set of {len(comp)}): " + ", ".join(m.removeprefix("rlroute.") for m in comp))
    print("package-level edges (rlroute.<pkg> -> what it imports):")
    for a, bs in sorted(packages.items()):
        print(f"  {a.removeprefix('rlroute.') or 'rlroute'} -> {', '.join(sorted(b.removeprefix('rlroute.') for b in bs))}")


if __name__ == "__main__":
    main()
