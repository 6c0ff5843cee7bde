"""Reconstruction methods behind one contract (see `base.py`).

Each method lives in its own module, imported lazily by name so that e.g. the scico methods'
JAX import never happens in a torch-only job. A method module provides

    reconstruct(problem: Problem, hparams: dict, ctx: RunContext) -> Reconstruction

and optionally `reconstruct_grid(problem, grid, ctx) -> list[Reconstruction]` (to evaluate a
whole tuning grid in one batched run) or `tune(problem, settings, ctx) -> TuningResult` (for
methods whose tuning is not a grid search, e.g. Dirac's choice of stopping time).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from diracbench.errors import UserError

METHOD_MODULES: dict[str, str] = {
    "dirac-po": "diracbench.methods.dirac",
    "dirac-do": "diracbench.methods.dirac",
    "dps": "diracbench.methods.dps",
    "ddrm": "diracbench.methods.ddrm",
    "pnp-admm": "diracbench.methods.pnp_admm",
    "admm-tv": "diracbench.methods.admm_tv",
}


def load_method(name: str) -> ModuleType:
    if name not in METHOD_MODULES:
        raise UserError(f"unknown method {name!r}; known methods: {sorted(METHOD_MODULES)}")
    return importlib.import_module(METHOD_MODULES[name])
