"""Reconstruction methods behind one contract (see `base.py`).

Each method lives in its own module, imported lazily by name so that e.g. the scico methods'
JAX import never happens in a torch-only job. A module registers its method names with a literal
`METHOD_SPECS` dict (see `registry.py`, read without importing the module) and provides

    reconstruct(problem: Problem, hparams: dict, ctx: RunContext) -> Reconstruction

and optionally `reconstruct_grid(problem, grid, ctx) -> list[Reconstruction]` (to evaluate a
whole tuning grid in one batched run) or `tune(problem, settings, ctx) -> TuningResult` (for
methods whose tuning is not a grid search, e.g. Dirac's choice of stopping time).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from diracbench.methods.registry import spec


def load_method(name: str) -> ModuleType:
    """The module of a registered method (see registry.py); unknown names fail with the list."""
    return importlib.import_module(spec(name).module)
