"""Smooth Gaussian inpainting mask: m_t = (1 - exp(-r²/2s_t²))^k around the centre pixel.

Matches the official construction (a Gaussian-filtered impulse with 4-std truncation, normalised
by its maximum): inside the square of half-width floor(4 s + 0.5) around the centre the mask is
the closed form, outside it is exactly 1, and A_0 is exactly the identity. The mask is not binary:
every solver must use A = diag(m) as is.
"""

from __future__ import annotations

import torch

from diracbench.operators.base import DegradationFamily, LinearOperator, SpectralDecomposition, image_hw, per_image
from diracbench.operators.severity import LinearSchedule, SeverityParameter, SeveritySchedule

# Task registry entry (read as a literal by diracbench.tasks, without importing this module).
# The paper tunes inpainting for a distribution distance (FD-VGG stands in for FID offline).
TASK_SPECS = {"inpaint": {"operator": "inpaint", "title": "Inpainting", "objective": "fd_vgg", "order": 20}}


def smooth_masks(
    std: torch.Tensor,
    image_size: tuple[int, int],
    power: float,
    centre: tuple[int, int],
    truncate: float = 4.0,
) -> torch.Tensor:
    """(B,) mask stds -> (B, 1, H, W) float64 masks; a std of 0 gives an all-ones mask."""
    std = torch.as_tensor(std, dtype=torch.float64).reshape(-1, 1, 1)
    h, w = image_size
    di = (torch.arange(h, dtype=torch.float64, device=std.device) - centre[0]).reshape(1, -1, 1)
    dj = (torch.arange(w, dtype=torch.float64, device=std.device) - centre[1]).reshape(1, 1, -1)
    safe = torch.where(std > 0, std, torch.ones_like(std))
    bump = torch.exp(-(di**2 + dj**2) / (2.0 * safe**2))
    half = torch.floor(truncate * safe + 0.5)
    inside = (di.abs() <= half) & (dj.abs() <= half) & (std > 0)
    mask = torch.where(inside, (1.0 - bump).clamp(min=0.0) ** power, torch.ones_like(bump))
    return mask.unsqueeze(1)


class DiagonalSVD(SpectralDecomposition):
    """U = V = I; the mask values are the singular values."""

    def __init__(self, mask: torch.Tensor) -> None:
        self._s = mask[0] if mask.ndim == 4 else mask  # (1, H, W)

    @property
    def singular_values(self) -> torch.Tensor:
        return self._s

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def V(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def U(self, z: torch.Tensor) -> torch.Tensor:
        return z


class MaskOperator(LinearOperator):
    """A x = m ⊙ x with the same mask on every channel (self-adjoint)."""

    def __init__(self, mask: torch.Tensor, std: float, channels: int = 3) -> None:
        self.mask, self.std, self.channels = mask, std, int(channels)  # mask: (1, 1, H, W)

    @property
    def x_shape(self) -> tuple[int, int, int]:
        return (self.channels, int(self.mask.shape[-2]), int(self.mask.shape[-1]))

    @property
    def y_shape(self) -> tuple[int, int, int]:
        return self.x_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.to(x.dtype) * x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.mask.to(y.dtype) * y

    def svd(self) -> DiagonalSVD:
        return DiagonalSVD(self.mask)


class SmoothMaskFamily(DegradationFamily):
    """A_t x = m_t ⊙ x with mask std s(t); s(0) = 0 gives the identity."""

    kind = "inpaint"
    severity_parameter = SeverityParameter("mask_std", "mask std (px)", "mask_std_schedule", "mask_std_t1")
    example_config = {"kind": "inpaint", "mask_std_min": 0.1, "mask_std_max": 3.0, "mask_power": 4}

    def __init__(
        self,
        image_size: tuple[int, int],
        mask_std: SeveritySchedule,
        power: float = 4.0,
        centre: tuple[int, int] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_size: int = 512,
        channels: int = 3,
    ) -> None:
        self._setup(image_size, device, dtype, cache_size, channels)
        self.mask_std = mask_std
        self.power = float(power)
        self.centre = centre if centre is not None else (self.image_size[0] // 2, self.image_size[1] // 2)

    @classmethod
    def from_config(
        cls,
        cfg: dict,
        image_size: int | tuple[int, int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels: int = 3,
    ) -> "SmoothMaskFamily":
        std = LinearSchedule(float(cfg["mask_std_min"]), float(cfg["mask_std_max"]))
        return cls(image_hw(image_size), std, float(cfg["mask_power"]), device=device, dtype=dtype, channels=channels)

    def std_at(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        # The official code returns the identity at exactly t = 0, whatever s(0) is.
        return torch.where(t > 0, self.mask_std(t), torch.zeros_like(t))

    def masks(self, t: torch.Tensor) -> torch.Tensor:
        return smooth_masks(self.std_at(t), self.image_size, self.power, self.centre).to(self.device, self.dtype)

    def at(self, t: float) -> MaskOperator:
        def build(key: float) -> MaskOperator:
            return MaskOperator(self.masks(torch.tensor([key], dtype=torch.float64)), float(self.std_at(torch.tensor(key))), self.channels)

        return self._cache.get(t, build)

    def apply(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t) or t.ndim == 0:
            return self.at(float(t)).forward(x)
        # Built on the images' device: per-image severities never make a round trip to the host.
        return self.masks(per_image(t, x.shape[0], x.device)).to(x.dtype) * x

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "image_size": list(self.image_size),
            "mask_power": self.power,
            "mask_centre": list(self.centre),
            "truncate_std": 4.0,
            "mask_std_t1": float(self.std_at(torch.tensor(1.0))),
            "mask_std_schedule": self.mask_std.to_dict(),
        }

    @classmethod
    def from_dict(
        cls, spec: dict, device: torch.device | str = "cpu", severity: SeveritySchedule | None = None, channels: int = 3
    ) -> "SmoothMaskFamily":
        schedule = severity if severity is not None else cls.severity_parameter.schedule_in(spec)
        return cls(tuple(spec["image_size"]), schedule, float(spec["mask_power"]), tuple(spec["mask_centre"]), device=device, channels=channels)
