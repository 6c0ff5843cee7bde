"""Separable Gaussian blur with whole-sample reflection padding, as matrices.

With reflection padding the 2-D blur is separable: per channel, A(X) = H_r X H_c^T, where
H = C P is the "valid" 1-D correlation with the taps g (C) after the reflection-padding matrix P.
Working with the two small matrices gives an exact adjoint (H_r^T Y H_c) and an exact SVD
(from the 1-D SVDs) for free, and on a GPU two batched matmuls are cheap even at 256 px.

Taps follow the official Dirac construction: g(u) ∝ exp(-u²/2s²) for |u| <= floor(6s + 0.5)
inside a `kernel_size` window, normalised to sum 1, computed in float64.
"""

from __future__ import annotations

import torch

from diracbench.errors import UserError
from diracbench.operators.base import SEPARABLE, DegradationFamily, LinearOperator, SpectralDecomposition, image_hw, per_image
from diracbench.operators.severity import LinearSchedule, SeverityParameter, SeveritySchedule

# Task registry entry (read as a literal by diracbench.tasks, without importing this module).
TASK_SPECS = {"deblur": {"operator": "blur", "title": "Gaussian deblurring", "objective": "lpips", "order": 10}}


def gaussian_taps(std: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B,) stds -> (B, kernel_size) normalised float64 taps, truncated at radius floor(6s+0.5)."""
    std = torch.as_tensor(std, dtype=torch.float64).reshape(-1, 1)
    # Checked on the CPU only: on a GPU the check would stall the training loop on every batch.
    if std.device.type == "cpu" and torch.any(std <= 0):
        raise ValueError("blur std must be positive")
    half = kernel_size // 2
    u = torch.arange(-half, half + 1, dtype=torch.float64, device=std.device).reshape(1, -1)
    radius = torch.floor(6.0 * std + 0.5)
    taps = torch.exp(-(u**2) / (2.0 * std**2)) * (u.abs() <= radius)
    return taps / taps.sum(dim=1, keepdim=True)


def reflect_index(n: int, pad: int) -> torch.Tensor:
    """Source index of every position of a whole-sample reflection-padded axis (numpy 'reflect')."""
    if pad >= n:
        raise UserError(f"reflection padding of {pad} px needs images larger than {pad} px (got {n}); use a smaller kernel_size")
    idx = torch.arange(-pad, n + pad)
    idx = idx.abs()
    return torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)


def padded_correlation_basis(n: int, kernel_size: int) -> torch.Tensor:
    """(K, n, n) float64: basis[k] = rows k..k+n-1 of the reflection-padding matrix P.

    Then H = sum_k g[k] basis[k] is the 1-D blur matrix C P for taps g.
    """
    pad = kernel_size // 2
    src = reflect_index(n, pad)
    P = torch.zeros(n + 2 * pad, n, dtype=torch.float64)
    P[torch.arange(n + 2 * pad), src] = 1.0
    return torch.stack([P[k : k + n] for k in range(kernel_size)])


class SeparableSVD(SpectralDecomposition):
    """SVD of X -> H_r X H_c^T from the SVDs of H_r and H_c (shared over channels)."""

    spectrum = SEPARABLE

    def __init__(self, H_r: torch.Tensor, H_c: torch.Tensor, dtype: torch.dtype) -> None:
        Ur, sr, Vrt = torch.linalg.svd(H_r.to(torch.float64))
        Uc, sc, Vct = torch.linalg.svd(H_c.to(torch.float64))
        self._Ur, self._Vr = Ur.to(dtype), Vrt.T.contiguous().to(dtype)
        self._Uc, self._Vc = Uc.to(dtype), Vct.T.contiguous().to(dtype)
        self._s = torch.outer(sr, sc).to(dtype).unsqueeze(0)  # (1, H, W)
        self.row_singular_values = sr.to(dtype)
        self.col_singular_values = sc.to(dtype)

    @property
    def singular_values(self) -> torch.Tensor:
        return self._s

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        return self._Vr.T @ x @ self._Vc

    def V(self, z: torch.Tensor) -> torch.Tensor:
        return self._Vr @ z @ self._Vc.T

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return self._Ur.T @ y @ self._Uc

    def U(self, z: torch.Tensor) -> torch.Tensor:
        return self._Ur @ z @ self._Uc.T

    def thresholded(self, threshold: float) -> torch.Tensor:
        """Zero the 1-D singular values below `threshold`, then form the 2-D products (the
        official DDRM deblurring rule: a factor below it removes its whole row or column)."""
        sr, sc = self.row_singular_values, self.col_singular_values
        sr = torch.where(sr >= threshold, sr, torch.zeros_like(sr))
        sc = torch.where(sc >= threshold, sc, torch.zeros_like(sc))
        return torch.outer(sr, sc).unsqueeze(0)


class BlurOperator(LinearOperator):
    """A fixed blur X -> H_r X H_c^T applied to every channel."""

    def __init__(self, H_r: torch.Tensor, H_c: torch.Tensor, std: float, channels: int = 3) -> None:
        self.H_r, self.H_c, self.std, self.channels = H_r, H_c, std, int(channels)
        self._svd: SeparableSVD | None = None

    @property
    def x_shape(self) -> tuple[int, int, int]:
        return (self.channels, int(self.H_r.shape[1]), int(self.H_c.shape[1]))

    @property
    def y_shape(self) -> tuple[int, int, int]:
        return (self.channels, int(self.H_r.shape[0]), int(self.H_c.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.H_r.to(x.dtype) @ x @ self.H_c.to(x.dtype).T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.H_r.to(y.dtype).T @ y @ self.H_c.to(y.dtype)

    def svd(self) -> SeparableSVD:
        if self._svd is None:
            self._svd = SeparableSVD(self.H_r, self.H_c, self.H_r.dtype)
        return self._svd

    def response_to_ones(self, like: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(like[:1])  # rows of C P sum to 1: constants are preserved


class GaussianBlurFamily(DegradationFamily):
    """A_t = blur with std s(t); s(0) is the residual blur, s(1) the measurement's."""

    kind = "blur"
    severity_parameter = SeverityParameter("std", "blur std (px)", "std_schedule", "std_t1")
    example_config = {"kind": "blur", "kernel_size": 13, "std_min": 0.3, "std_max": 1.0}

    def __init__(
        self,
        image_size: tuple[int, int],
        kernel_size: int,
        std: SeveritySchedule,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_size: int = 512,
        channels: int = 3,
    ) -> None:
        if kernel_size % 2 != 1:
            raise UserError(f"blur kernel_size must be odd (got {kernel_size})")
        self._setup(image_size, device, dtype, cache_size, channels)
        self.kernel_size = int(kernel_size)
        self.std = std
        h, w = self.image_size
        self._basis_r = padded_correlation_basis(h, kernel_size).to(self.device, dtype)
        self._basis_c = self._basis_r if w == h else padded_correlation_basis(w, kernel_size).to(self.device, dtype)

    @classmethod
    def from_config(
        cls,
        cfg: dict,
        image_size: int | tuple[int, int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels: int = 3,
    ) -> "GaussianBlurFamily":
        std = LinearSchedule(float(cfg["std_min"]), float(cfg["std_max"]))
        return cls(image_hw(image_size), int(cfg["kernel_size"]), std, device=device, dtype=dtype, channels=channels)

    def std_at(self, t: float | torch.Tensor) -> torch.Tensor:
        return self.std(torch.as_tensor(t, dtype=torch.float64))

    def matrices(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image 1-D blur matrices: (B, H, H) and (B, W, W), built on the device of `t`."""
        taps = gaussian_taps(self.std_at(t), self.kernel_size).to(self.device, self.dtype)
        H_r = torch.einsum("bk,kij->bij", taps, self._basis_r)
        H_c = H_r if self._basis_c is self._basis_r else torch.einsum("bk,kij->bij", taps, self._basis_c)
        return H_r, H_c

    def at(self, t: float) -> BlurOperator:
        def build(key: float) -> BlurOperator:
            H_r, H_c = self.matrices(torch.tensor([key], dtype=torch.float64))
            return BlurOperator(H_r[0], H_c[0], float(self.std_at(key)), self.channels)

        return self._cache.get(t, build)

    def apply(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t) or t.ndim == 0:
            return self.at(float(t)).forward(x)
        H_r, H_c = self.matrices(per_image(t, x.shape[0], x.device))
        return H_r.to(x.dtype).unsqueeze(1) @ x @ H_c.to(x.dtype).unsqueeze(1).transpose(-1, -2)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "image_size": list(self.image_size),
            "kernel_size": self.kernel_size,
            "padding": "reflect",
            "truncate_std": 6.0,
            "std_t0": float(self.std_at(0.0)),
            "std_t1": float(self.std_at(1.0)),
            "std_schedule": self.std.to_dict(),
        }

    @classmethod
    def from_dict(
        cls, spec: dict, device: torch.device | str = "cpu", severity: SeveritySchedule | None = None, channels: int = 3
    ) -> "GaussianBlurFamily":
        schedule = severity if severity is not None else cls.severity_parameter.schedule_in(spec)
        return cls(tuple(spec["image_size"]), int(spec["kernel_size"]), schedule, device=device, channels=channels)

