"""No import cycles inside ``rlroute/``: every import of an ``rlroute`` module counts, at module level, under
``TYPE_CHECKING`` or inside a function (a lazy import that hides a cycle is still a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.importgraph import ROOT, components, cycle_in, import_graph


def test_no_import_cycles_inside_rlroute() -> None:
    graph = import_graph()
    found = [" -> ".join(cycle_in(graph, set(c))) + f"  (modules importing each other: {', '.join(c)})"
             for c in components(graph)]
    assert not found, "import cycles inside rlroute/:\n" + "\n".join(found)


def test_graph_counts_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "rlroute"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from rlroute.sub import c\n")
    (pkg / "sub" / "c.py").write_text("import rlroute.sub.a.thing\n")
    graph = import_graph(pkg)
    assert graph["rlroute.sub.a"] == {"rlroute.sub.b"}
    assert graph["rlroute.sub.b"] == {"rlroute.sub.c"}
    assert graph["rlroute.sub.c"] == {"rlroute.sub.a"}
    assert components(graph) == [["rlroute.sub.a", "rlroute.sub.b", "rlroute.sub.c"]]
    assert cycle_in(graph, {"rlroute.sub.a", "rlroute.sub.b", "rlroute.sub.c"}) == [
        "rlroute.sub.a", "rlroute.sub.b", "rlroute.sub.c", "rlroute.sub.a"]


def test_graph_covers_every_module() -> None:
    graph = import_graph()
    assert len(graph) == sum(1 for _ in ROOT.rglob("*.py"))
    # a real edge, so a resolver that finds nothing cannot pass the cycle test
    assert "rlroute.cluster.base" in graph["rlroute.features.state"]
    assert all(isinstance(ast.parse(p.read_text()), ast.Module) for p in ROOT.rglob("*.py"))
