"""The operator registry: kind -> its torch family class and its scico adapter.

`family_from_config`, `family_from_spec` (operators/__init__) and `scico_ops.build_operator`
dispatch through `operator_kind`, so a new kind is one module with its family class (and
TASK_SPECS naming the task it serves), one scico adapter, an entry here, a branch of
workflow/schemas/task.schema.yaml and, where its config needs more than the schema can say, a
check in `diracbench.configcheck.OPERATOR_CHECKS` (torch-free: it runs at Snakemake DAG time).
tests/unit/test_operator_contract.py runs the operator contract on every kind registered here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from diracbench.errors import UserError
from diracbench.operators.base import DegradationFamily
from diracbench.operators.blur import GaussianBlurFamily
from diracbench.operators.blur_scico import scico_blur
from diracbench.operators.downsample import DownsampleFamily
from diracbench.operators.downsample_scico import scico_downsample
from diracbench.operators.inpaint import SmoothMaskFamily
from diracbench.operators.inpaint_scico import scico_mask
from diracbench.scico_ops import ScicoOperator

# (operator.json family dict, (N, H, W, C), blur_impl) -> A_1 in JAX with its exact normal solve.
ScicoAdapter = Callable[[dict, tuple[int, int, int, int], str], ScicoOperator]


@dataclass(frozen=True)
class OperatorKind:
    family: type[DegradationFamily]
    scico: ScicoAdapter

    @property
    def kind(self) -> str:
        return self.family.kind


OPERATOR_KINDS: dict[str, OperatorKind] = {
    entry.kind: entry
    for entry in (
        OperatorKind(GaussianBlurFamily, scico_blur),
        OperatorKind(SmoothMaskFamily, scico_mask),
        OperatorKind(DownsampleFamily, scico_downsample),
    )
}


def operator_kind(kind: str, what: str = "operator kind") -> OperatorKind:
    """The registry entry of `kind`; `what` names where the kind came from in the error."""
    entry = OPERATOR_KINDS.get(kind)
    if entry is None:
        raise UserError(f"unknown {what} {kind!r}; registered operator kinds: {sorted(OPERATOR_KINDS)}")
    return entry
