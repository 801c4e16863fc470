"""The package's shape, read from its own imports (every scope, function-level ones included): dependencies point
one way between the packages, no module imports itself back through others, and Dagster stays in the Dagster
layer. docs/extending.md explains the layers; this test is what keeps them true."""

from __future__ import annotations

import ast
from pathlib import Path

import crrecon_pipeline

PACKAGE = Path(crrecon_pipeline.__file__).parent
BOTTOM = {"grid", "errors", "numbers", "registry", "plots", "settings"}
# what each part of the package may import (besides itself and the bottom modules)
ALLOWED = {
    "grid": set(), "errors": set(), "numbers": set(), "registry": {"errors"}, "plots": {"grid"},
    "settings": {"errors"},
    "data": BOTTOM,
    "physics": BOTTOM | {"data"},
    "models": BOTTOM,
    "losses": BOTTOM,
    "train": BOTTOM | {"data", "physics", "models", "losses"},
    "report": BOTTOM | {"data", "physics", "models", "losses", "train"},
    "design": BOTTOM | {"data", "physics", "models", "losses", "train"},
    "migrate": BOTTOM | {"data", "models", "losses", "train"},
    "cli": BOTTOM | {"data", "physics", "models", "losses", "train", "report", "design", "migrate"},
    "defs": BOTTOM | {"data", "physics", "models", "losses", "train", "report", "design"},
    "definitions": {"defs", "settings"},  # the code location, and the environment variables it reads
}
SCRIPTS = {"crrecon_pipeline.defs.demo": {"definitions"}}  # `make demo` runs the assembled code location


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every crrecon_pipeline module this file imports, in any scope (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def modules() -> dict[str, set[str]]:
    """{module: the package modules it imports}."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in files and m != name} for name, path in files.items()}


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_no_import_cycle_in_any_scope():
    graph = modules()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package's __init__ importing its own submodule is not a cycle
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_dependencies_point_one_way():
    wrong = []
    for module, imported in modules().items():
        here = part(module)
        if not here:
            continue
        for target in imported:
            there = part(target)
            if there and there != here and there not in ALLOWED[here] | SCRIPTS.get(module, set()):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layering (ALLOWED above): " + ", ".join(sorted(wrong))


def test_dagster_only_in_the_dagster_layer_and_only_its_public_api():
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        dagster = {m for m in imports_of(path) if m == "dagster" or m.startswith("dagster.")}
        assert not {m for m in dagster if m.startswith("dagster._")}, f"{name} imports Dagster's private API"
        if part(name) not in ("defs", "definitions"):
            assert not dagster, f"{name} is plain Python and must not import Dagster"


def test_few_top_level_modules_and_every_package_says_what_it_owns():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 9, top
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80, f"{init.parent.name}/__init__.py needs a docstring saying what the package owns"


def defined_names(path: Path) -> set[str]:
    """Top-level names a module defines itself (functions, classes, assignments), not the ones it imports."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_names_are_imported_from_the_module_that_defines_them():
    """No re-exports inside the package: `from crrecon_pipeline.X import name` takes `name` where it is defined
    (package __init__ files may export a public API for users: crrecon_pipeline.physics, .data)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in files):
                continue
            source = files[node.module]
            own = defined_names(source)
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}" in files
                if not submodule and alias.name not in own:
                    wrong.append(f"{module_name(path)}: {alias.name} from {node.module}")
    assert not wrong, "names imported from a module that does not define them: " + ", ".join(sorted(wrong))


def test_test_modules_share_helpers_not_each_other():
    """Shared test code lives in conftest.py (fixtures) and the helper modules; a test module never imports
    another test module or conftest.py (pytest loads conftest itself)."""
    wrong = []
    for path in Path(__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("crrecon_pipeline_")):
                target = (node.module or "").rsplit(".", 1)[-1]
                if target.startswith("test_") or target == "conftest":
                    wrong.append(f"{path.name} imports {target}")
    assert not wrong, "test modules importing test modules: " + ", ".join(sorted(wrong))
