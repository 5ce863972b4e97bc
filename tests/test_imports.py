"""The import direction of STYLE.md: no circle among effnet's modules, and nobody imports the CLI."""

import ast
from pathlib import Path

import effnet
import effnet.cli
import effnet.errors
import effnet.weights

SRC = Path(effnet.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _resolve(name: str) -> str | None:
    """The effnet module a dotted import name lands in (a name inside a package's __init__ -> the package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """effnet modules that ``module`` imports anywhere (functions included), except under TYPE_CHECKING."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for n in names:
            target = _resolve(n) if n.startswith("effnet") else None
            if target and target != module:
                found.add(target)
    # `from effnet.analysis import profile` lands in the package and the submodule: keep the most specific.
    return {t for t in found if not any(o.startswith(t + ".") for o in found)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or around a circle."""
    # Importing a package's submodule runs the package's __init__ first, but that is Python's order of
    # execution, not a dependency of ours: the edges are what each file asks for.
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return out


def test_no_import_circle_among_effnet_modules():
    assert cycles({m: imports_of(m) for m in MODULES}) == []


def test_the_cycle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_the_cli():
    allowed = {"effnet.cli", "effnet.__main__"}
    offenders = sorted(m for m in MODULES if m not in allowed and "effnet.cli" in imports_of(m))
    assert offenders == []


def test_errors_are_the_bottom_layer():
    assert imports_of("effnet.errors") == set()
    assert issubclass(effnet.errors.CheckpointError, ValueError)  # raised at the API edge, like ValueError
    assert not issubclass(effnet.errors.UserError, ValueError)
    assert effnet.weights.CheckpointError is effnet.errors.CheckpointError
    assert effnet.cli.UserError is effnet.errors.UserError
