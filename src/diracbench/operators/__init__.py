"""Forward operators shared by every method: blur and smooth-mask families, noise schedule.

`family_from_config` builds a family from a task's config section (before any schedule is
learned); `load_operator_spec` / `family_from_spec` rebuild exactly what the `measure` rule wrote
to `operator.json`, optionally with a learned severity table in place of the linear one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diracbench.errors import UserError
from diracbench.operators.base import DegradationFamily, LinearOperator, SpectralDecomposition
from diracbench.operators.blur import GaussianBlurFamily
from diracbench.operators.inpaint import SmoothMaskFamily
from diracbench.operators.noise import GeometricNoise
from diracbench.operators.severity import LinearSchedule, SeveritySchedule, TableSchedule, read_schedule_table

__all__ = [
    "DegradationFamily",
    "GaussianBlurFamily",
    "GeometricNoise",
    "LinearOperator",
    "LinearSchedule",
    "SeveritySchedule",
    "SmoothMaskFamily",
    "SpectralDecomposition",
    "TableSchedule",
    "family_from_config",
    "family_from_spec",
    "load_operator_spec",
    "operator_spec",
    "read_schedule_table",
]


def family_from_config(operator_cfg: dict, image_size: int, device: torch.device | str = "cpu") -> DegradationFamily:
    """A family with the linear severity rule between the configured end points."""
    kind = operator_cfg["kind"]
    size = (int(image_size), int(image_size))
    if kind == "blur":
        std = LinearSchedule(float(operator_cfg["std_min"]), float(operator_cfg["std_max"]))
        return GaussianBlurFamily(size, int(operator_cfg["kernel_size"]), std, device=device)
    if kind == "inpaint":
        std = LinearSchedule(float(operator_cfg["mask_std_min"]), float(operator_cfg["mask_std_max"]))
        return SmoothMaskFamily(size, std, float(operator_cfg["mask_power"]), device=device)
    raise UserError(f"unknown operator kind {kind!r}; use 'blur' or 'inpaint'")


def operator_spec(family: DegradationFamily, noise: GeometricNoise, task: str) -> dict:
    """The content of operator.json."""
    return {
        "task": task,
        "family": family.to_dict(),
        "noise": noise.to_dict(),
        "sigma_1": noise.sigma_1,
        "value_range": [0.0, 1.0],
        "channels": 3,
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
    if fam["kind"] == "blur":
        if severity is not None:
            _check_endpoint(float(severity(torch.tensor(1.0))), fam["std_t1"], "blur std")
        return GaussianBlurFamily.from_dict(fam, device=device, std=severity)
    if fam["kind"] == "inpaint":
        if severity is not None:
            _check_endpoint(float(severity(torch.tensor(1.0))), fam["mask_std_t1"], "mask std")
        return SmoothMaskFamily.from_dict(fam, device=device, std=severity)
    raise UserError(f"operator.json names an unknown family kind {fam['kind']!r}")


def _check_endpoint(got: float, want: float, what: str) -> None:
    if abs(got - want) > 1e-4 * max(1.0, abs(want)):
        raise UserError(f"the severity schedule ends at {what} {got:.6g} but the measurements use {want:.6g}; make the schedule end at the configured maximum")
