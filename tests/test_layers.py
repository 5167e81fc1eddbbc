"""The layering: `emodraw_batch` (core) <- `flows` (Prefect, Dask) <- `emodraw_cli` (typer), no import circles.

Checked on the source (AST), imports inside functions included, so a lazy import that
breaks the rule fails here too; imports under `if TYPE_CHECKING:` never run and are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"emodraw_batch": 0, "flows": 1, "emodraw_cli": 2}
# Third-party packages a layer must not import: orchestration stays out of the core,
# the command-line toolkit out of everything below the command line.
FORBIDDEN = {
    "emodraw_batch": {"prefect", "prefect_dask", "dask", "distributed", "dask_cuda", "typer"},
    "flows": {"typer"},
    "emodraw_cli": set(),
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return skipped


def imports_of(path: Path, root: Path) -> set[str]:
    """Absolute names of the modules `path` imports (relative imports resolved)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            # `from . import x` / `from pkg import submodule` import the submodule too.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Internal module -> internal modules it imports."""
    files = [p for layer in LAYERS for p in (root / layer).rglob("*.py")]
    modules = {_module_name(p, root): p for p in files}
    return {name: {m for m in imports_of(p, root) if m in modules and m != name} for name, p in modules.items()}


def violations(root: Path) -> list[str]:
    """Every import that points up a layer or at a forbidden package, and every import circle."""
    found = []
    for layer in LAYERS:
        for path in (root / layer).rglob("*.py"):
            name = _module_name(path, root)
            for imported in sorted(imports_of(path, root)):
                top = imported.split(".")[0]
                if top in LAYERS and LAYERS[top] > LAYERS[layer]:
                    found.append(f"{name} imports {imported}: a lower layer must not import a higher one")
                if top in FORBIDDEN[layer]:
                    found.append(f"{name} imports {imported}: {layer} must not use {top}")
    found += [f"import circle: {' -> '.join(c)}" for c in circles(import_graph(root))]
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per import circle found by depth-first search (empty when the graph is acyclic).

    A package's `__init__` importing its own submodules is not a circle worth reporting.
    """
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # package -> its own submodule
                continue
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_project_keeps_its_layers_and_has_no_import_circles():
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    "module, source, words",
    [
        ("emodraw_batch/bad.py", "def f():\n    import prefect\n", "must not use prefect"),
        ("emodraw_batch/bad.py", "from flows import label\n", "must not import a higher one"),
        ("flows/bad.py", "from emodraw_cli.app import app\n", "must not import a higher one"),
        ("emodraw_batch/a.py", "from . import b\n", "import circle"),
    ],
)
def test_the_check_catches_a_wrong_import(tmp_path, module, source, words):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "emodraw_batch" / "b.py").write_text("from .a import x\n")
    (tmp_path / "emodraw_batch" / "a.py").write_text("x = 1\n")
    (tmp_path / module).write_text(source)
    assert any(words in v for v in violations(tmp_path)), violations(tmp_path)


def test_type_checking_imports_do_not_count(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "emodraw_batch" / "ok.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from prefect import flow\n"
    )
    assert violations(tmp_path) == []
