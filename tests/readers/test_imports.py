"""app/readers has no import cycle: each module imports alone, and the import graph is acyclic."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

READERS = Path(__file__).resolve().parents[2] / "app" / "readers"


def _module_name(path: Path) -> str:
    parts = path.relative_to(READERS.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(p) for p in READERS.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_readers_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=READERS.parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _imports(path: Path) -> set[str]:
    """The app.readers modules ``path`` imports anywhere (functions, TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("app.readers")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("app.readers"):
            module = node.module or ""
            submodules = {f"{module}.{a.name}" for a in node.names} & set(MODULES)
            found |= submodules or {module}
    return found


def test_readers_import_graph_has_no_cycle() -> None:
    graph = {_module_name(p): _imports(p) - {_module_name(p)} for p in READERS.rglob("*.py")}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycle = trail[trail.index(target) :] if target in trail else trail
                pytest.fail(f"import cycle: {' -> '.join([*cycle, target])}")
            if target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
