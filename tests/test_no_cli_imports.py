"""Layering: no module of the package imports the command line (effnet.cli); errors live in effnet.errors."""

import ast
from pathlib import Path

import effnet.cli
import effnet.errors
import effnet.weights

SRC = Path(__file__).resolve().parents[1] / "src" / "effnet"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def test_no_module_imports_effnet_cli():
    offenders = [str(p.relative_to(SRC)) for p in sorted(SRC.rglob("*.py"))
                 if p.name != "__main__.py" and "effnet.cli" in _imports(p)]  # __main__ is the entry point
    assert offenders == []
    assert _imports(SRC / "errors.py") == {"__future__", "__future__.annotations"}  # the bottom layer


def test_error_types():
    assert issubclass(effnet.errors.CheckpointError, ValueError)  # raised at the API edge, like ValueError
    assert not issubclass(effnet.errors.UserError, ValueError)
    assert effnet.weights.CheckpointError is effnet.errors.CheckpointError
    assert effnet.cli.UserError is effnet.errors.UserError
