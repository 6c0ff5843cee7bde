"""The operator registry: kind -> its torch family class and its scico adapter.

`family_from_config`, `family_from_spec` (operators/__init__) and `scico_ops.build_operator`
dispatch through `operator_kind`, so a new kind is one module with its family class (and
TASK_SPECS naming the task it serves), one scico adapter, an entry here, a branch of
workflow/schemas/task.schema.yaml and, where its config needs more than the schema can say, a
check in `diracbench.configcheck.OPERATOR_CHECKS` (torch-free: it runs at Snakemake DAG time).
tests/unit/test_operator_contract.py runs the operator contract on every kind registered here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from diracbench.errors import UserError
from diracbench.operators.base import DegradationFamily
from diracbench.operators.blur import GaussianBlurFamily
from diracbench.operators.downsample import DownsampleFamily
from diracbench.operators.inpaint import SmoothMaskFamily

if TYPE_CHECKING:
    from diracbench.scico_ops import ScicoOperator

# (operator.json family dict, (N, H, W, C), blur_impl) -> A_1 in JAX with its exact normal solve.
ScicoAdapter = Callable[[dict, tuple[int, int, int, int], str], "ScicoOperator"]


@dataclass(frozen=True)
class OperatorKind:
    family: type[DegradationFamily]
    # "module:function", imported on use: only the scico jobs load the adapters, so an edit to
    # them (or to scico_ops) reruns the scico methods, not every job that builds a torch operator.
    scico_adapter: str

    @property
    def kind(self) -> str:
        return self.family.kind

    @property
    def scico(self) -> ScicoAdapter:
        module, _, name = self.scico_adapter.partition(":")
        return getattr(importlib.import_module(module), name)


OPERATOR_KINDS: dict[str, OperatorKind] = {
    entry.kind: entry
    for entry in (
        OperatorKind(GaussianBlurFamily, "diracbench.operators.blur_scico:scico_blur"),
        OperatorKind(SmoothMaskFamily, "diracbench.operators.inpaint_scico:scico_mask"),
        OperatorKind(DownsampleFamily, "diracbench.operators.downsample_scico:scico_downsample"),
    )
}


def operator_kind(kind: str, what: str = "operator kind") -> OperatorKind:
    """The registry entry of `kind`; `what` names where the kind came from in the error."""
    entry = OPERATOR_KINDS.get(kind)
    if entry is None:
        raise UserError(f"unknown {what} {kind!r}; registered operator kinds: {sorted(OPERATOR_KINDS)}")
    return entry
