"""The package's import graph, read from the source with ``ast`` (nothing is executed): no import circles, and
no arrow running back up the layers (docs/SETUP.md, "Layout").

Layers, bottom to top: ``infra`` (cache, workers, machine record, atomic writes) < the library (the top-level
modules, ``zoo/``, ``quant/``, ``quest/``) < ``paper`` (profiles, run grids, paper items) < ``ui`` (the notebook
panels) and ``bench`` (benchmarks). ``genqlib/__init__.py`` is the facade that re-exports names of every layer
(lazily), so it is the one module exempt from the layer rule. Every import counts, also one inside a function:
a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "genqlib"
RANK = {"infra": 0, "library": 1, "paper": 2, "ui": 3, "bench": 3}
# Known arrows back up, each with its reason; the test fails when one disappears, so the list stays true.
KNOWN_UPWARD: set[tuple[str, str]] = set()  # none: every arrow points down


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _target(name: str, known: dict[str, Path]) -> str | None:
    """The genqlib module that ``name`` (a module or a name inside one) lives in; None outside genqlib."""
    while name and name.startswith("genqlib"):
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every genqlib module that ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # ``from X import Y``: the module X.Y when Y is one (X's __init__ runs for any submodule anyway,
            # as for every import), else the module X that defines the name Y
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in (_target(t, known) for t in targets) if t and t != name}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("infra", "paper", "ui", "bench") else "library"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def upward(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (a, b)
        for a, targets in edges.items()
        if a != "genqlib"
        for b in targets
        if b != "genqlib" and RANK[layer(b)] > RANK[layer(a)]
    }


def test_the_walk_sees_known_imports():
    """The oracle for the walker: hand-checked arrows of three kinds (from-import of a module, of a name, and
    a lazy import inside a function)."""
    edges = graph()
    assert "genqlib.quant.layers" in edges["genqlib.quant.reconstruct"]
    assert "genqlib.inference" in edges["genqlib.filters"]  # from genqlib.inference import eval_mode
    assert "genqlib.zoo.tiny_sd" in edges["genqlib.zoo.smoke"]  # inside build_pipeline
    assert len(edges) > 80


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert cycles(graph()) == []


def test_no_arrow_runs_back_up_the_layers():
    found = upward(graph())
    assert found - KNOWN_UPWARD == set(), "a lower layer imports a higher one"
    assert KNOWN_UPWARD - found == set(), "a known exception is gone: remove it from KNOWN_UPWARD"


@pytest.mark.parametrize("name", ["infra", "library"])
def test_lower_layers_never_import_paper_or_ui(name):
    edges = graph()
    bad = {
        (a, b)
        for a, targets in edges.items()
        if a != "genqlib" and layer(a) == name
        for b in targets
        if layer(b) in ("paper", "ui") and (a, b) not in KNOWN_UPWARD
    }
    assert bad == set()


def test_no_module_over_500_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 500}
    assert long == {}
