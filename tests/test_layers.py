"""The layering: `emodraw_batch` (core) <- `emodraw_flows` (Prefect, Dask) <- `emodraw_cli` (typer), no import circles.

Inside the core, its subpackages in order: the base modules <- inference <- files <- analysis <-
job <- train (`emodraw_batch/__init__.py`, the public API, may name any of them). And no class or
function longer than 150 lines anywhere in the three layers.

Checked on the source (AST), imports inside functions included, so a lazy import that
breaks the rule fails here too; imports under `if TYPE_CHECKING:` never run and are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"emodraw_batch": 0, "emodraw_flows": 1, "emodraw_cli": 2}
# The core's subpackages, lowest first; "" is the base modules right under emodraw_batch/.
SUBPACKAGES = {"": 0, "inference": 1, "files": 2, "analysis": 3, "job": 4, "train": 5}
MAX_LINES = 150
# Third-party packages a layer must not import: orchestration stays out of the core,
# the command-line toolkit out of everything below the command line.
FORBIDDEN = {
    "emodraw_batch": {"prefect", "prefect_dask", "dask", "distributed", "dask_cuda", "typer"},
    "emodraw_flows": {"typer"},
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
    found += subpackage_violations(root)
    found += root_imports(root)
    found += [f"import circle: {' -> '.join(c)}" for c in circles(import_graph(root))]
    return found


def _imports_root(node: ast.AST, package: str) -> bool:
    """Whether an import statement reads the package root `emodraw_batch` itself (not one of its submodules)."""
    if isinstance(node, ast.Import):
        return any(alias.name == "emodraw_batch" for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
        return ".".join([*base, *([node.module] if node.module else [])]) == "emodraw_batch"
    return False


def root_imports(root: Path) -> list[str]:
    """Modules inside emodraw_batch/ that import the package root (`from emodraw_batch import ...`).

    The root's `__init__` names the job layer (`Summary`, `run`...), so a module that reads a name from
    the root runs while the root is half initialised: an import circle that the graph above cannot see
    (it skips a package importing its own submodules). Shared values live in base modules (version.py).
    """
    found = []
    for path in sorted((root / "emodraw_batch").rglob("*.py")):
        name = _module_name(path, root)
        if name == "emodraw_batch":
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        skipped = _type_checking_nodes(tree := ast.parse(path.read_text()))
        if any(_imports_root(node, package) for node in ast.walk(tree) if id(node) not in skipped):
            found.append(f"{name} imports the package root emodraw_batch: import circle; import the base module "
                         "that holds the name instead (e.g. emodraw_batch.version)")
    return found


def subpackage(module: str) -> str:
    """The core subpackage a module of emodraw_batch belongs to ("" for the base modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in SUBPACKAGES) else ""


def subpackage_violations(root: Path) -> list[str]:
    """Imports inside the core that point from a lower subpackage to a higher one."""
    found = []
    for path in (root / "emodraw_batch").rglob("*.py"):
        name = _module_name(path, root)
        if name == "emodraw_batch":
            continue  # the public API names anything, lazily
        here = subpackage(name)
        for imported in sorted(imports_of(path, root)):
            if imported.split(".")[0] != "emodraw_batch" or imported == "emodraw_batch":
                continue
            there = subpackage(imported)
            if SUBPACKAGES.get(there, 0) > SUBPACKAGES.get(here, 0):
                found.append(f"{name} imports {imported}: emodraw_batch.{here or '(base)'} must not import "
                             f"emodraw_batch.{there}, a higher layer of the core")
    return found


def long_definitions(root: Path) -> list[str]:
    """Every class or function longer than MAX_LINES lines in the three layers."""
    found = []
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_LINES:
                        found.append(f"{path.relative_to(root)}: {node.name} is {lines} lines (at most {MAX_LINES}): split it by job")
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


def test_no_class_or_function_is_longer_than_150_lines():
    assert long_definitions(ROOT) == []


def test_the_length_check_catches_a_long_function(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    (tmp_path / "emodraw_flows" / "long.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}")
    assert long_definitions(tmp_path) == [f"emodraw_flows/long.py: long is {MAX_LINES + 1} lines (at most {MAX_LINES}): split it by job"]


@pytest.mark.parametrize(
    "module, source, words",
    [
        ("emodraw_batch/bad.py", "def f():\n    import prefect\n", "must not use prefect"),
        ("emodraw_batch/bad.py", "from emodraw_flows import label\n", "must not import a higher one"),
        ("emodraw_flows/bad.py", "from emodraw_cli.app import app\n", "must not import a higher one"),
        ("emodraw_batch/a.py", "from . import b\n", "import circle"),
        ("emodraw_batch/inference/bad.py", "from emodraw_batch.job import runner\n", "a higher layer of the core"),
        ("emodraw_batch/bad.py", "def f():\n    from emodraw_batch.files.storage import x\n", "a higher layer of the core"),
        ("emodraw_batch/files/bad.py", "from ..analysis import stats\n", "a higher layer of the core"),
        ("emodraw_batch/job/bad.py", "from emodraw_batch import __version__\n", "imports the package root"),
        ("emodraw_batch/bad.py", "def f():\n    import emodraw_batch\n", "imports the package root"),
        ("emodraw_batch/job/bad.py", "from .. import x\n", "imports the package root"),
    ],
)
def test_the_check_catches_a_wrong_import(tmp_path, module, source, words):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    for sub in ("inference", "files", "analysis", "job"):
        (tmp_path / "emodraw_batch" / sub).mkdir()
        (tmp_path / "emodraw_batch" / sub / "__init__.py").write_text("")
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
