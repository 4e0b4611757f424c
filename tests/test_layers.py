"""The import contract: each package imports only the packages below it, no package cycle.

The layers follow the data flow of DESIGN.md, bottom first. Every import of an llmpool module
counts, at module level and inside functions alike; only ``if TYPE_CHECKING:`` blocks (types
for the checker, never run) are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmpool

SRC = Path(llmpool.__file__).parent

#: Bottom first. A package may import its own modules and those of the layers below it.
LAYERS = (
    ("errors", "version"),
    ("contracts", "tags"),
    ("credentials",),
    ("models",),
    ("providers",),
    ("repository",),
    ("limits", "usage"),
    ("observe",),
    ("chain",),
    ("fallback",),
    ("pool",),
    ("api", "legacy", "alembic"),
    ("cli",),
    ("__main__",),
    ("__init__",),
)
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """``llmpool.fallback.walk`` -> ``fallback``; ``llmpool`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, module: str) -> set[str]:
    """The llmpool modules ``module`` imports when it runs (any depth, not for types only)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("llmpool"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                parent = module.split(".")[: -node.level or None]
                base = ".".join([*parent, base] if base else parent)
            if base.startswith("llmpool"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names if base == "llmpool")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def module_imports() -> dict[str, set[str]]:
    """Every llmpool module and the llmpool modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        parts = ("llmpool", *path.relative_to(SRC).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[module] = imports(path, module)
    return graph


def test_every_package_is_placed_in_a_layer() -> None:
    """A new package must be given its place in the layers before anything imports it."""
    assert {package_of(m) for m in module_imports()} <= set(RANK)


def test_imports_point_down_the_layers() -> None:
    """No package imports one above it, or another of its own layer."""
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in module_imports().items()
        for target in targets
        if package_of(target) != package_of(module)
        and RANK[package_of(target)] >= RANK[package_of(module)]
    )
    assert wrong == []


def test_no_cycle_between_packages() -> None:
    """The packages' import graph has no cycle (what the layers imply, checked on its own)."""
    edges: dict[str, set[str]] = {}
    for module, targets in module_imports().items():
        for target in targets:
            if package_of(target) != package_of(module):
                edges.setdefault(package_of(module), set()).add(package_of(target))
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(package: str, path: list[str]) -> list[str] | None:
        seen[package] = 1
        for target in sorted(edges.get(package, ())):
            if seen.get(target) == 1:
                return [*path, package, target]
            if target not in seen and (found := cycle_from(target, [*path, package])):
                return found
        seen[package] = 2
        return None

    for package in sorted(edges):
        if package not in seen:
            assert cycle_from(package, []) is None
