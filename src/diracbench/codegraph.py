"""Which source files of the package a stage runs: the import graph of its entry modules.

The workflow declares these files as a rule's `code=` inputs, so that editing a file reruns
exactly the jobs whose code imports it (directly or through other package modules, at the top of
a module or inside a function). Imports are read with `ast` from the source, never executed, so
building the DAG imports neither torch nor JAX. Only modules of this package are followed;
importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`, which are included.

Modules loaded by name at run time (`importlib.import_module`: a method by its registry entry,
a loss factory of `train`) are invisible to `ast`; a rule names them as further entry modules.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "diracbench"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(module: str, root: Path = PACKAGE_DIR) -> Path | None:
    """The source file of a package module (a package's __init__.py), or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@lru_cache(maxsize=None)
def _imported(path: Path, module: str) -> frozenset[str]:
    """Package modules a source file imports (absolute names), wherever the import statement is.

    Cached per file: the rules' closures share most files, and parsing is the whole cost of
    building the DAG's code inputs (a workflow build parsed each file 30 times before).
    """
    is_pkg = path.name == "__init__.py"
    here = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            # Imports under `if TYPE_CHECKING:` never run: annotations, not code the job executes.
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            # `from pkg import name` may import the submodule pkg.name.
            found.update(f"{stem}.{alias.name}" for alias in node.names if alias.name != "*")
    return frozenset(m for m in found if m.split(".")[0] == PACKAGE)


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@lru_cache(maxsize=None)
def _closure(entries: tuple[str, ...], exclude: tuple[str, ...], root: str) -> tuple[Path, ...]:
    root_dir = Path(root)
    seen: set[str] = set()
    files: set[Path] = set()
    stack = [m for e in entries for m in _with_parents(e)]
    while stack:
        module = stack.pop()
        if module in seen or module in exclude:
            continue
        seen.add(module)
        path = module_file(module, root_dir)
        if path is None:
            continue  # `from pkg import function`: the name was not a module
        files.add(path)
        for dep in _imported(path, module):
            stack.extend(_with_parents(dep))
    return tuple(sorted(files))


def import_closure(entries: list[str] | tuple[str, ...], exclude: tuple[str, ...] = (), root: Path = PACKAGE_DIR) -> list[Path]:
    """Source files of the entry modules and every package module they import, transitively.

    `exclude` names modules not to include nor follow (plumbing that cannot change a result).
    Cached: one workflow build parses each file once.
    """
    for e in entries:
        if module_file(e, root) is None:
            raise ValueError(f"entry module {e!r} is not a module of the {PACKAGE} package")
    return list(_closure(tuple(entries), tuple(exclude), str(root)))
