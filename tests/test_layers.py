"""The package's layers import only downward, and no module imports itself back through others.

The graph comes from the source (every `import` statement, those inside functions too), so a lazy
import cannot hide a cycle or an upward dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hyperdas"
# lower rank = lower layer; a module may import its own layer (acyclically) and any lower rank
LAYERS = {"core": 0, "data": 1, "target": 2, "das": 3, "hyper": 3, "experiments": 4, "": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else ""


def imports_of(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in modules and name.startswith("hyperdas.")}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    # `from hyperdas.x import y` counts as importing the package x's __init__ only when y is not a module
    return {
        name: {m for m in imports_of(path, modules) if m != name and m not in LAYER_PACKAGES}
        for name, path in files.items()
    }


LAYER_PACKAGES = {f"hyperdas.{name}" for name in LAYERS if name}


def test_every_subpackage_has_a_rank():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LAYERS) - {""}, "a new subpackage needs its place in LAYERS"


def test_imports_only_go_down_or_sideways_within_a_layer():
    upward = []
    for module, imported in graph().items():
        for other in imported:
            mine, theirs = layer_of(module), layer_of(other)
            if mine != theirs and LAYERS[theirs] >= LAYERS[mine]:
                upward.append(f"{module} -> {other}")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from hyperdas.target.models import load_target", {"hyperdas.target.models"}),
        ("def f():\n    import hyperdas.das.training as t", {"hyperdas.das.training"}),
        ("from hyperdas.data import ravel", {"hyperdas.data.ravel"}),
    ],
)
def test_the_graph_sees_plain_lazy_and_package_relative_imports(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    assert imports_of(path, modules) - LAYER_PACKAGES == expected
