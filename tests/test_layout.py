"""The package's shape, as docs/architecture.md states it: no import cycles, no import from a
higher floor (imports inside functions included), and no function over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# bottom to top; a module may import from its own floor or below
FLOORS = [
    ("segnet.files", "segnet.progress"),
    ("segnet.models", "segnet.data", "segnet.metrics", "segnet.pretrained"),
    ("segnet.report", "segnet.export"),
    ("segnet.engine",),
    ("segnet",),  # the package's front: re-exports the public API from the floors below
    ("segnet.benchmark",),
    ("segnet.reproduce", "segnet.serve"),
    ("segnet.cli",),
    ("segnet.__main__",),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> int:
    for index, names in reversed(list(enumerate(FLOORS))):
        if any(module == name or module.startswith(name + ".") for name in names if name != "segnet") \
                or module == "segnet" and "segnet" in names:
            return index
    raise AssertionError(f"{module} is on no floor of FLOORS; add it (and to docs/architecture.md)")


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, at the top or inside functions."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "segnet":
                target = node.module
            else:
                continue
            for alias in node.names:  # "from . import x" may name a module
                candidate = f"{target}.{alias.name}"
                as_path = SRC / Path(*candidate.split("."))
                found.add(candidate if as_path.with_suffix(".py").exists() or as_path.is_dir() else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "segnet")
    return found - {module}


GRAPH = {_module_name(path): _imports(path) for path in sorted(SRC.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_reaches_a_higher_floor(module):
    upward = sorted(target for target in GRAPH[module] if _floor(target) > _floor(module))
    assert not upward, f"{module} (floor {_floor(module)}) imports from above: {upward}"


def test_no_import_cycles():
    # a package's __init__ re-exporting its own modules is not a cycle through them
    edges = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                cycle = trail[trail.index(target):] + [target] if target in trail else [module, target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_every_function_is_under_80_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 >= 80:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, "split these: " + ", ".join(long)
