"""The public surface and the shape of the package: every name in `lakeflow.__all__` imports, and
no module hides an import of another lakeflow module inside a function (a cycle dodged at run
time instead of broken; `lint-imports` checks the layers themselves)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import lakeflow as lf

PACKAGE = Path(lf.__file__).parent

# function-level imports of lakeflow modules allowed, with why: none so far
ALLOWED: dict[tuple[str, str], str] = {}


def test_every_public_name_imports():
    assert len(lf.__all__) == len(set(lf.__all__))
    for name in lf.__all__:
        assert getattr(lf, name) is not None, name
        exec(f"from lakeflow import {name}", {})


def test_pipeline_keeps_materialize_and_status():
    assert callable(lf.Pipeline.materialize) and callable(lf.Pipeline.status)


def test_every_subpackage_says_what_it_owns():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        module = importlib.import_module(f"lakeflow.{init.parent.name}")
        assert (module.__doc__ or "").strip(), f"{init} has no docstring"
        assert hasattr(module, "__all__"), f"{init} has no __all__"


def _function_level_lakeflow_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if inside and isinstance(child, ast.ImportFrom):
                if child.level or (child.module or "").split(".")[0] == "lakeflow":
                    found.append(f"{'.' * child.level}{child.module or ''}")
            elif inside and isinstance(child, ast.Import):
                found.extend(a.name for a in child.names if a.name.split(".")[0] == "lakeflow")
            visit(child, inside)

    visit(tree, False)
    return found


def test_no_lakeflow_module_is_imported_inside_a_function():
    hidden = [
        f"{path.relative_to(PACKAGE.parent)}: {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for module in _function_level_lakeflow_imports(path)
        if (str(path.relative_to(PACKAGE.parent)), module) not in ALLOWED
    ]
    assert hidden == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the lakeflow modules it imports when it loads (not under TYPE_CHECKING)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def owner(name: str) -> str:
        while name not in modules:
            name = name.rsplit(".", 1)[0]
        return name

    def imported(body: list[ast.stmt]) -> set[str]:
        out: set[str] = set()
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                out |= {owner(a.name) for a in node.names if a.name.startswith("lakeflow")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lakeflow"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    out.add(full if full in modules else owner(node.module or ""))
            elif isinstance(node, ast.If | ast.Try):
                out |= imported(node.body) | imported(node.orelse)
        return out

    return {
        name: imported(ast.parse(path.read_text()).body) - {name} for name, path in modules.items()
    }


def test_the_module_import_graph_has_no_cycle():
    """Drawn from every module's load-time imports: a cycle anywhere fails, named."""
    graph = _import_graph()
    assert graph["lakeflow.api"] >= {"lakeflow.plan.status", "lakeflow.control.client"}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
