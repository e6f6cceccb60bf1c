"""The package's layout rules, read from its source: which module may import what, and how long a
function may grow. A change that breaks one names the file and the line."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "vidtempo"
MAX_FUNCTION_LINES = 80
MAX_TRAIN_FUNCTION_LINES = 60  # train/: a function a reader takes in at once
MAX_CLI_MODULE_LINES = 450
# the package's layers, bottom up: a module imports from its own layer or those below it, never
# from above (a top-level module or folder of platform/vidtempo/ is a unit)
LAYERS = [
    {"storage", "verbosity", "ops"},
    {"config"},
    {"machine", "lineage", "cluster"},
    {"ray_session", "capacity", "metrics", "tracking", "models"},
    {"data"},
    {"preflight"},
    {"train", "report"},
    {"tune", "doctor", "demo"},
    {"bench", "tooling"},  # measurements and tools around the product
    {"cli"},
]


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


def _unit(rel: Path) -> str:
    return rel.with_suffix("").parts[0]


def _layer(unit: str) -> int:
    (level,) = [i for i, units in enumerate(LAYERS) if unit in units]
    return level


def test_every_unit_has_a_layer():
    units = {_unit(rel) for rel, _ in _modules()} - {"__init__"}
    assert units == set().union(*LAYERS), units ^ set().union(*LAYERS)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    found = []
    for rel, tree in _modules():
        if _unit(rel) == "__init__":
            continue
        for line, name in _imports(tree):
            parts = name.split(".")
            if parts[0] != "vidtempo" or len(parts) < 2 or parts[1] not in set().union(*LAYERS):
                continue
            if _layer(parts[1]) > _layer(_unit(rel)):
                found.append(f"{rel}:{line} imports {name} (layer {_layer(parts[1])} above "
                             f"{_layer(_unit(rel))})")  # fmt: skip
    assert not found, found


def test_the_training_step_is_defined_once():
    """Only train/step.py's train_step both calls backward and steps an optimiser: the loop and
    every bench call it."""
    found = [(str(rel), node.name) for rel, tree in _modules()
             for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
             and ".backward(" in ast.unparse(node) and ".step(" in ast.unparse(node)]  # fmt: skip
    assert found == [("train/step.py", "train_step")], found


def test_no_function_in_train_is_longer_than_60_lines():
    found = [f"{rel}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
             for rel, tree in _modules() if rel.parts[0] == "train" for node in ast.walk(tree)
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
             and node.end_lineno - node.lineno + 1 > MAX_TRAIN_FUNCTION_LINES]  # fmt: skip
    assert not found, found


def test_the_cli_modules_stay_short():
    found = {str(p.relative_to(PACKAGE)): n for p in sorted((PACKAGE / "cli").glob("*.py"))
             if (n := len(p.read_text().splitlines())) > MAX_CLI_MODULE_LINES}  # fmt: skip
    assert not found, found


def test_no_function_is_longer_than_80_lines():
    found = [f"{rel}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
             for rel, tree in _modules() for node in ast.walk(tree)
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
             and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]  # fmt: skip
    assert not found, found
