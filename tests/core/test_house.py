"""The house (issue #14, item 11): analysis only counts — it renders nothing and evaluates no
spec text — and archdsl's modules import each other without a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[2] / "archdsl"


def _top(path: Path) -> str:
    """The top-level archdsl module a file belongs to: `ops` for archdsl/ops/conv.py."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imports(path: Path) -> set[str]:
    """The top-level archdsl modules a file imports, at the top or inside functions (a
    package's modules count as the package: archdsl/ops/ is `ops`)."""
    depth = len(path.relative_to(PACKAGE).parts)  # 1 for archdsl/x.py, 2 for archdsl/ops/x.py
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == depth:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and depth == 2:
            out.add(_top(path))  # a sibling in the same package
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("archdsl."):
            out.add(node.module.split(".")[1])
    return out


def module_graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for path in PACKAGE.glob("**/*.py"):
        for target in imports(path):
            known = (PACKAGE / f"{target}.py").exists() or (PACKAGE / target).is_dir()
            if known and target != _top(path):
                g.add_edge(_top(path), target)
    return g


def test_analysis_only_counts():
    path = PACKAGE / "analysis.py"
    used = imports(path)
    assert used <= {"_perf", "ir", "ops", "errors"}, used  # no report, numfmt, budgets, expr
    outside = {a.name.split(".")[0] for n in ast.walk(ast.parse(path.read_text()))
               if isinstance(n, ast.Import) for a in n.names}
    outside |= {n.module.split(".")[0] for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module}
    assert outside <= {"__future__", "dataclasses", "typing", "math", "collections"}, outside


def test_no_import_circles():
    assert list(nx.simple_cycles(module_graph())) == []
