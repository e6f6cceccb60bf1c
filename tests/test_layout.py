"""The package's layout rules, read from its source: which module may import what, and how long a
function may grow. A change that breaks one names the file and the line."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "vidtempo"
MAX_FUNCTION_LINES = 80
# the commands at the top, which may use the benchmarks and the CLI
TOP = {"cli.py", "gpu_check.py"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE), ast.parse(path.read_text(), str(path))


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # `from vidtempo import bench`
                yield node.lineno, f"{node.module}.{alias.name}"


def test_only_tracking_imports_mlflow():
    found = [f"{rel}:{line} imports {name}" for rel, tree in _modules()
             if rel.parts[0] != "tracking" for line, name in _imports(tree)
             if name == "mlflow" or name.startswith("mlflow.")]  # fmt: skip
    assert not found, found


def test_no_lower_layer_imports_the_benchmarks_or_the_cli():
    found = [f"{rel}:{line} imports {name}" for rel, tree in _modules()
             if rel.parts[0] != "bench" and str(rel) not in TOP for line, name in _imports(tree)
             if name.startswith(("vidtempo.bench", "vidtempo.cli"))]  # fmt: skip
    assert not found, found


def test_no_function_is_longer_than_80_lines():
    found = [f"{rel}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
             for rel, tree in _modules() for node in ast.walk(tree)
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
             and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]  # fmt: skip
    assert not found, found
