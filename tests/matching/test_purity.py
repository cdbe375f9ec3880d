"""app.matching is pure: no torch, no pydantic, no readers or architectures, at any depth.

Torch-bound code (the merge writer, its adapters) lives in ``app.merge``; the wire schema
(pydantic) in ``app.schemas``. Matching plans from indexes of ``TensorInfo`` alone.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import app
import app.matching

FORBIDDEN = ("torch", "pydantic", "app.readers", "app.architectures", "app.schemas")
MATCHING = Path(app.matching.__file__).parent
ROOT = Path(app.__file__).parents[1]


def _modules() -> list[Path]:
    return sorted(MATCHING.rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """Every module name an import statement or a literal import call names, anywhere."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):  # walks function bodies and TYPE_CHECKING blocks too
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
                found.append((node.lineno, str(first.value)))
    return found


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_purity_scan_finds_every_kind_of_import() -> None:
    code = (
        "import os\n"
        "def f():\n    import torch.nn\n"
        "def g():\n    from pydantic import BaseModel\n"
        "from app import readers\n"
        "from .. import architectures\n"
        "importlib.import_module('torch')\n"
    )
    found = {n for _, n in _imported(ast.parse(code), "app.matching") if _forbidden(n)}
    assert found == {
        "torch.nn",
        "pydantic",
        "pydantic.BaseModel",
        "app.readers",
        "app.architectures",
        "torch",
    }


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_purity_no_matching_module_imports_torch_pydantic_readers_or_architectures(
    path: Path,
) -> None:
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path.parent)
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [f"line {line}: {name}" for line, name in _imported(tree, package) if _forbidden(name)]
    assert not bad, f"{_dotted(path)} imports {bad}; move that code to app.merge or the edge"


def test_purity_importing_every_matching_module_leaves_torch_and_pydantic_unloaded() -> None:
    modules = [_dotted(p) for p in _modules()]
    assert len(modules) > 20
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
