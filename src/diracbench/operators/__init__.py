"""Forward operators shared by every method: the operator contract, its families, noise schedule.

`family_from_config` builds a family from a task's config section (before any schedule is
learned); `load_operator_spec` / `family_from_spec` rebuild exactly what the `measure` rule wrote
to `operator.json`, optionally with a learned severity table in place of the linear one. Both
dispatch on the operator kind through `operators.registry`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diracbench.errors import UserError
from diracbench.operators.base import DegradationFamily, LinearOperator, SpectralDecomposition
from diracbench.operators.blur import GaussianBlurFamily
from diracbench.operators.downsample import DownsampleFamily
from diracbench.operators.inpaint import SmoothMaskFamily
from diracbench.operators.noise import GeometricNoise
from diracbench.operators.registry import OPERATOR_KINDS, operator_kind
from diracbench.operators.severity import LinearSchedule, Severity, SeverityParameter, SeveritySchedule, TableSchedule, read_schedule_table

__all__ = [
    "DegradationFamily",
    "DownsampleFamily",
    "GaussianBlurFamily",
    "GeometricNoise",
    "LinearOperator",
    "LinearSchedule",
    "OPERATOR_KINDS",
    "Severity",
    "SeverityParameter",
    "SeveritySchedule",
    "SmoothMaskFamily",
    "SpectralDecomposition",
    "TableSchedule",
    "family_from_config",
    "family_from_spec",
    "load_operator_spec",
    "operator_kind",
    "operator_spec",
    "read_schedule_table",
]


def family_from_config(operator_cfg: dict, image_size: int, device: torch.device | str = "cpu") -> DegradationFamily:
    """A family with the linear severity rule between the configured end points."""
    return operator_kind(operator_cfg["kind"]).family.from_config(operator_cfg, image_size, device=device)


def operator_spec(family: DegradationFamily, noise: GeometricNoise, task: str) -> dict:
    """The content of operator.json."""
    return {
        "task": task,
        "family": family.to_dict(),
        "noise": noise.to_dict(),
        "sigma_1": noise.sigma_1,
        "value_range": [0.0, 1.0],
        "channels": family.channels,
        "image_size": family.to_dict()["image_size"],
    }


def load_operator_spec(path: str | Path) -> dict:
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; run the 'measure' rule for this dataset and task first") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); delete it and rerun the 'measure' rule") from None
    for key in ("task", "family", "noise", "sigma_1"):
        if key not in spec:
            raise UserError(f"{path} lacks the key {key!r}; delete it and rerun the 'measure' rule")
    return spec


def family_from_spec(
    spec: dict, severity: SeveritySchedule | None = None, device: torch.device | str = "cpu"
) -> DegradationFamily:
    """Rebuild the family of operator.json; `severity` (e.g. a learned table) replaces the linear rule.

    A replacement must agree with the measurement's severity at t = 1, or the model would be
    trained for a different degradation than the one the measurements were made with.
    """
    fam = spec["family"]
    cls = operator_kind(fam["kind"], "operator.json family kind").family
    if severity is not None:
        param = cls.severity_parameter
        _check_endpoint(float(severity(torch.tensor(1.0))), fam[param.end_key], param.label)
    return cls.from_dict(fam, device=device, severity=severity, channels=int(spec.get("channels", 3)))


def _check_endpoint(got: float, want: float, what: str) -> None:
    if abs(got - want) > 1e-4 * max(1.0, abs(want)):
        raise UserError(f"the severity schedule ends at {got:.6g} ({what}) but the measurements use {want:.6g}; make the schedule end at the configured maximum")
