"""Super-resolution as a same-size projection, with a nested severity family.

A_1 = P = U D, where D averages every factor x factor block and U = r^2 D^T replicates each
average back over its block (nearest upsampling, the adjoint-consistent right inverse: D U = I).
P is an orthogonal projector, so the measurement y = P x + sigma_1 n keeps the image size: every
method reconstructs the same (H, W) array, and the white noise on the null space of P is pure
noise that A^T y = P y discards (scale-and-extensions.md §5.2).

Severity moves the "strength" r (the share of detail removed) from r(0) (0: the identity) to
r(1) (1: true super-resolution):

    A_t = P + (1 - r(t)) (I - P) = (1 - r) I + r P.

The family is nested: for r < 1, A_t' = (P + ((1 - r') / (1 - r)) (I - P)) A_t, and P A_t = P.
Its exact SVD has U = V = an orthonormal DCT within every block, tensored in 2-D, with the
block-mean coefficient first (at (i f, j f)); singular values 1 there and 1 - r elsewhere.
"""

from __future__ import annotations

import math

import torch

from diracbench.errors import UserError
from diracbench.operators.base import DegradationFamily, LinearOperator, SpectralDecomposition, image_hw, per_image
from diracbench.operators.severity import LinearSchedule, SeverityParameter, SeveritySchedule

# Task registry entry (read as a literal by diracbench.tasks, without importing this module).
TASK_SPECS = {"sr4": {"operator": "downsample", "title": "4× super-resolution", "objective": "lpips", "order": 30}}


def project(x: torch.Tensor, factor: int) -> torch.Tensor:
    """P x: every factor x factor block of the last two axes replaced by its mean."""
    *lead, h, w = x.shape
    blocks = x.reshape(*lead, h // factor, factor, w // factor, factor)
    return blocks.mean(dim=(-3, -1), keepdim=True).expand(blocks.shape).reshape(x.shape)


def blend(x: torch.Tensor, keep: float | torch.Tensor, strength: float | torch.Tensor, factor: int) -> torch.Tensor:
    """keep x + r P x with keep = 1 - r: floats, or one value per image (B, 1, 1, 1) in x's dtype.
    At r = 1 this is P x exactly, so the measurement lies in the range of P."""
    return keep * x + strength * project(x, factor)


def block_dct(factor: int) -> torch.Tensor:
    """(f, f) float64 orthonormal DCT-II; row k is the k-th basis vector, row 0 the constant."""
    n = torch.arange(factor, dtype=torch.float64)
    k = n.reshape(-1, 1)
    D = torch.cos(math.pi * (2 * n + 1) * k / (2 * factor)) * math.sqrt(2.0 / factor)
    D[0] = 1.0 / math.sqrt(factor)
    return D


def blockwise(x: torch.Tensor, M: torch.Tensor, factor: int) -> torch.Tensor:
    """M X_b M^T for every factor x factor block X_b; coefficient (k, l) of block (i, j) lands
    at (i f + k, j f + l)."""
    *lead, h, w = x.shape
    blocks = x.reshape(*lead, h // factor, factor, w // factor, factor)
    M = M.to(x.device, x.dtype)
    return torch.einsum("ka,...iajb,lb->...ikjl", M, blocks, M).reshape(x.shape)


def _check_factor(image_size: tuple[int, int], factor: int) -> None:
    if factor < 1 or image_size[0] % factor or image_size[1] % factor:
        raise UserError(f"downsample factor {factor} must divide the image size {image_size[0]}x{image_size[1]}")


class BlockSVD(SpectralDecomposition):
    """U = V = blockwise orthonormal DCT; s = 1 on block means, 1 - r on the other coefficients."""

    def __init__(self, image_size: tuple[int, int], factor: int, strength: float, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.factor = factor
        self._D = block_dct(factor).to(device, dtype)
        s = torch.full((1, *image_size), 1.0 - strength, dtype=torch.float64)
        s[:, ::factor, ::factor] = 1.0
        self._s = s.to(device, dtype)

    @property
    def singular_values(self) -> torch.Tensor:
        return self._s

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        return blockwise(x, self._D, self.factor)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        return blockwise(z, self._D.T, self.factor)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return self.Vt(y)

    def U(self, z: torch.Tensor) -> torch.Tensor:
        return self.V(z)


class DownsampleOperator(LinearOperator):
    """A = (1 - r) I + r P on every channel (symmetric)."""

    def __init__(
        self,
        image_size: tuple[int, int],
        factor: int,
        strength: float,
        channels: int = 3,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _check_factor(image_size, factor)
        self.image_size, self.factor, self.strength, self.channels = image_size, int(factor), float(strength), int(channels)
        self.device, self.dtype = torch.device(device), dtype
        self._svd: BlockSVD | None = None

    @property
    def x_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    @property
    def y_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blend(x, 1.0 - self.strength, self.strength, self.factor)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.forward(y)

    def svd(self) -> BlockSVD:
        if self._svd is None:
            self._svd = BlockSVD(self.image_size, self.factor, self.strength, self.dtype, self.device)
        return self._svd

    def response_to_ones(self, like: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(like[:1])  # P preserves constants, and so does every A_t

    def normal_solve(self, b: torch.Tensor, rho: float | torch.Tensor, c: float = 1.0) -> torch.Tensor:
        # A^T A = P + (1 - r)^2 (I - P): invert on the range of P and on its complement separately.
        pb = project(b, self.factor)
        keep = 1.0 - self.strength
        return pb / (c + rho) + (b - pb) / (c * keep * keep + rho)


class DownsampleFamily(DegradationFamily):
    """A_t = (1 - r(t)) I + r(t) P with r rising from r(0) (0: identity) to r(1) (1: A_1 = P)."""

    kind = "downsample"
    severity_parameter = SeverityParameter("strength", "detail removed r", "strength_schedule", "strength_t1")
    example_config = {"kind": "downsample", "factor": 4, "strength_min": 0.0, "strength_max": 1.0}

    def __init__(
        self,
        image_size: tuple[int, int],
        factor: int,
        strength: SeveritySchedule,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_size: int = 512,
        channels: int = 3,
    ) -> None:
        self._setup(image_size, device, dtype, cache_size, channels)
        self.factor = int(factor)
        _check_factor(self.image_size, self.factor)
        self.strength = strength

    @classmethod
    def from_config(
        cls,
        cfg: dict,
        image_size: int | tuple[int, int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels: int = 3,
    ) -> "DownsampleFamily":
        strength = LinearSchedule(float(cfg.get("strength_min", 0.0)), float(cfg.get("strength_max", 1.0)))
        return cls(image_hw(image_size), int(cfg["factor"]), strength, device=device, dtype=dtype, channels=channels)

    def strength_at(self, t: float | torch.Tensor) -> torch.Tensor:
        return self.strength(torch.as_tensor(t, dtype=torch.float64))

    def at(self, t: float) -> DownsampleOperator:
        def build(key: float) -> DownsampleOperator:
            return DownsampleOperator(self.image_size, self.factor, float(self.strength_at(key)), self.channels, self.device, self.dtype)

        return self._cache.get(t, build)

    def apply(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t) or t.ndim == 0:
            return self.at(float(t)).forward(x)
        r = self.strength_at(per_image(t, x.shape[0], x.device)).reshape(-1, 1, 1, 1)
        # 1 - r in float64, then rounded to x's dtype: the same numbers as the scalar path's floats.
        return blend(x, (1.0 - r).to(x.dtype), r.to(x.dtype), self.factor)

    def transition(self, t: float, t_next: float) -> DownsampleOperator:
        """G = P + ((1 - r') / (1 - r)) (I - P), itself of the form (1 - s) I + s P; G = P at r = 1."""
        r, r_next = float(self.strength_at(t)), float(self.strength_at(t_next))
        if r >= 1.0:
            if r_next < 1.0:
                raise ValueError(f"A_t = P at t = {t}: no later operator with strength {r_next} < 1 follows from it")
            return DownsampleOperator(self.image_size, self.factor, 1.0, self.channels, self.device, self.dtype)
        return DownsampleOperator(self.image_size, self.factor, 1.0 - (1.0 - r_next) / (1.0 - r), self.channels, self.device, self.dtype)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "image_size": list(self.image_size),
            "factor": self.factor,
            "strength_t1": float(self.strength_at(1.0)),
            "strength_schedule": self.strength.to_dict(),
        }

    @classmethod
    def from_dict(
        cls, spec: dict, device: torch.device | str = "cpu", severity: SeveritySchedule | None = None, channels: int = 3
    ) -> "DownsampleFamily":
        schedule = severity if severity is not None else cls.severity_parameter.schedule_in(spec)
        return cls(tuple(spec["image_size"]), int(spec["factor"]), schedule, device=device, channels=channels)
