"""Module-level literal dicts read from source with `ast`, without importing the module.

The method and task registries declare their entries this way (METHOD_SPECS, TASK_SPECS) so that
the Snakefile, tables and figures learn about them without importing torch or JAX.
"""

from __future__ import annotations

import ast
from pathlib import Path

from diracbench.errors import UserError


def module_dict_literal(path: Path, name: str) -> dict | None:
    """The literal dict assigned to `name` at the top of the source file `path`; None if absent."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise UserError(f"{path}: {name} must be a literal dict (read without importing the module)") from None
            if not isinstance(value, dict):
                raise UserError(f"{path}: {name} must be a dict of name -> spec")
            return value
    return None
