"""Noise level of the stochastic degradation process: sigma_t = sigma_min (sigma_max/sigma_min)^t.

sigma_1 = sigma_max is the measurement noise std in the [0, 1] image range; sigma_0 = sigma_min
stays above zero, so a small noise floor remains at t = 0 (as in the official code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diracbench.errors import UserError


@dataclass(frozen=True)
class GeometricNoise:
    sigma_min: float
    sigma_max: float

    def __post_init__(self) -> None:
        if not (0 < self.sigma_min <= self.sigma_max):
            raise UserError(f"noise: need 0 < sigma_min <= sigma_max (got {self.sigma_min}, {self.sigma_max})")

    def __call__(self, t: float | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    @property
    def sigma_1(self) -> float:
        return float(self.sigma_max)

    def to_dict(self) -> dict:
        return {"kind": "geometric", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    @classmethod
    def from_dict(cls, spec: dict) -> "GeometricNoise":
        return cls(float(spec["sigma_min"]), float(spec["sigma_max"]))
