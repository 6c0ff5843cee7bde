"""The task registry: `task name -> TaskSpec`, read without importing torch.

A task is a named degradation the benchmark reconstructs: its operator family (`kind`, the
`tasks.<name>.operator.kind` of the config), its title in tables and figures, and the metric
its `auto` tuning objective means. Each operator module in `diracbench/operators/` declares the
tasks it serves with a module-level literal

    TASK_SPECS = {"<task>": {"operator": "<kind>", "title": "...", "objective": "<metric>", "order": 10}}

read with `ast.literal_eval` (as `methods/registry.py` reads METHOD_SPECS), so the Snakefile,
the config check, tables and figures learn about a task without importing torch. Adding a task
is its operator module and its config entry; no central list names tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from diracbench.errors import UserError
from diracbench.literals import module_dict_literal

OPERATORS_DIR = Path(__file__).resolve().parent / "operators"
_KEYS = {"operator", "title", "objective", "order"}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    operator: str  # the operator kind (config tasks.<name>.operator.kind)
    title: str  # "Gaussian deblurring"
    objective: str  # the metric an `auto` tuning objective means for this task
    order: int = 1000  # column-group order in tables and figures
    module: str = ""


@lru_cache(maxsize=None)
def _discover(directory: str) -> dict[str, TaskSpec]:
    found: dict[str, TaskSpec] = {}
    for path in sorted(Path(directory).glob("*.py")):
        for name, raw in (module_dict_literal(path, "TASK_SPECS") or {}).items():
            where = f"{path.name}: TASK_SPECS[{name!r}]"
            if not isinstance(raw, dict) or not {"operator", "title", "objective"} <= set(raw):
                raise UserError(f"{where} needs 'operator', 'title' and 'objective'")
            unknown = sorted(set(raw) - _KEYS)
            if unknown:
                raise UserError(f"{where} has unknown keys {unknown}; known: {sorted(_KEYS)}")
            if name in found:
                raise UserError(f"task {name!r} is registered twice ({found[name].module} and {path.stem})")
            found[name] = TaskSpec(name=name, module=f"diracbench.operators.{path.stem}", **raw)
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


def registry() -> dict[str, TaskSpec]:
    """Every registered task, in table order."""
    return _discover(str(OPERATORS_DIR))


def task_spec(name: str) -> TaskSpec:
    tasks = registry()
    if name not in tasks:
        raise UserError(f"unknown task {name!r}; registered tasks: {sorted(tasks)} (an operator module in diracbench/operators/ registers a task with TASK_SPECS)")
    return tasks[name]


def task_title(name: str) -> str:
    """Title of a task in tables and figures (the name itself when unregistered)."""
    return registry()[name].title if name in registry() else name


def ordered_tasks(names) -> list[str]:
    """Task names in registry order; unregistered ones after them, in their given order."""
    rank = {t: i for i, t in enumerate(registry())}
    names = list(names)
    return sorted(names, key=lambda t: (rank.get(t, len(rank)), names.index(t)))
