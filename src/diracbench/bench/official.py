"""Official-style loops: the baselines that the batched Dirac sampler and loss are timed against.

They reproduce how the official implementation (z-fabian/dirac-diffusion; dirac-method.md §8.4)
spends its time, while computing exactly what diracbench computes, so that a speed-up is never
bought with a different result (tests/unit/test_bench_official.py checks the numbers agree):

- **Operators rebuilt on every call.** The official `data/operators.py` builds the blur kernel by
  Gaussian-filtering a centred impulse with scipy (truncation at 6 std) and puts it into a freshly
  constructed depthwise `nn.Conv2d`, applied after reflection padding, every time an operator is
  applied; the inpainting mask is made by Gaussian-filtering an impulse on a 2H x 2W canvas
  (truncation at 4 std), normalising by the maximum, taking 1 - ., cropping and raising to the
  mask power, also on every call. The severity schedule is looked up per call as well.
- **One image at a time.** The official sampler (`reconstruction/reverse_diffusion.py`) supports
  batch size 1 only: `official_style_sample` runs diracbench's own `dirac_sample` on one image at
  a time over `OfficialStyleFamily`, whose operators are rebuilt on every application, so the
  algorithm is the same code and only batching and operator reuse differ.
- **One sample at a time in the loss.** The official data transform draws t and degrades each
  sample separately, and its incremental-reconstruction loss applies A_tau sample by sample (to
  the estimate and to x0, not using linearity); the network itself runs on the whole batch, as
  in the official trainer. `official_style_loss` does the same.

Left out on both sides of the comparison: the official per-step metric logging (PSNR, SSIM,
LPIPS at every step), which diracbench makes optional; the comparison isolates batching and
operator reuse. Random numbers come from the same per-image generators as the batched code.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from diracbench.dirac.sampler import SamplerSettings, dirac_sample
from diracbench.operators import DegradationFamily, GeometricNoise, LinearOperator, SpectralDecomposition


def official_blur_kernel(std: float, kernel_size: int) -> np.ndarray:
    """(K, K) float64 kernel: a centred impulse Gaussian-filtered by scipy (truncation 6 std).

    `mode="constant"` and the renormalisation only matter when the 6-std support is wider than
    the window (the tiny test configs); there they give diracbench's window-normalised taps.
    Inside the window (every paper setting) the kernel is scipy's, unchanged.
    """
    impulse = np.zeros((kernel_size, kernel_size))
    impulse[kernel_size // 2, kernel_size // 2] = 1.0
    kernel = gaussian_filter(impulse, sigma=std, truncate=6.0, mode="constant")
    return kernel / kernel.sum()


def official_mask(std: float, image_size: tuple[int, int], power: float, centre: tuple[int, int]) -> np.ndarray:
    """(H, W) float64 smooth mask built as the official code does (impulse filtered on a 2x canvas)."""
    h, w = image_size
    if std <= 0:
        return np.ones((h, w))
    canvas = np.zeros((2 * h, 2 * w))
    canvas[h, w] = 1.0
    bump = gaussian_filter(canvas, sigma=std, truncate=4.0)
    mask = 1.0 - bump / bump.max()
    # Crop so that the impulse lands on the mask centre.
    top, left = h - centre[0], w - centre[1]
    return np.clip(mask[top : top + h, left : left + w], 0.0, None) ** power


def _official_blur(family: DegradationFamily, x: torch.Tensor, t: float) -> torch.Tensor:
    std = float(family.std_at(torch.tensor(float(t), dtype=torch.float64)))
    k = family.kernel_size
    c = x.shape[1]
    conv = nn.Conv2d(c, c, k, groups=c, bias=False).to(x.device)
    conv.weight.requires_grad_(False)
    kernel = torch.from_numpy(official_blur_kernel(std, k)).to(x.device, torch.float32)
    conv.weight.copy_(kernel.expand(c, 1, k, k))
    pad = k // 2
    return conv(F.pad(x, (pad, pad, pad, pad), mode="reflect"))


def _official_mask(family: DegradationFamily, x: torch.Tensor, t: float) -> torch.Tensor:
    std = float(family.std_at(torch.tensor(float(t), dtype=torch.float64)))
    mask = torch.from_numpy(official_mask(std, family.image_size, family.power, family.centre)).to(x.device, torch.float32)
    return mask * x


# Operator kind -> how the official code builds and applies A_t (from scratch, on every call).
OFFICIAL_BUILDERS: dict[str, Callable[[DegradationFamily, torch.Tensor, float], torch.Tensor]] = {"blur": _official_blur, "inpaint": _official_mask}


def official_apply(family: DegradationFamily, x: torch.Tensor, t: float) -> torch.Tensor:
    """A_t(x) for one image (1, C, H, W), with the operator built from scratch for this call.

    A kind the official code does not have (a task added to diracbench) is rebuilt from its own
    operator.json description on every call: the same cost pattern, diracbench's arithmetic."""
    build = OFFICIAL_BUILDERS.get(family.kind)
    if build is not None:
        return build(family, x, t)
    return type(family).from_dict(family.to_dict(), device=x.device).at(float(t)).forward(x)


class _OfficialOperator(LinearOperator):
    """A_t whose every forward application rebuilds it (`official_apply`)."""

    def __init__(self, family: DegradationFamily, t: float) -> None:
        self.family, self.t = family, float(t)

    @property
    def x_shape(self) -> tuple[int, int, int]:
        return self.family.x_shape

    @property
    def y_shape(self) -> tuple[int, int, int]:
        return self.family.y_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([official_apply(self.family, x[i : i + 1], self.t) for i in range(x.shape[0])])

    # The official sampler applies operators forwards only: what it never does is not timed, so
    # the adjoint and SVD are the (same) diracbench operator's.
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.family.at(self.t).adjoint(y)

    def svd(self) -> SpectralDecomposition:
        return self.family.at(self.t).svd()


class OfficialStyleFamily(DegradationFamily):
    """A family whose operators are rebuilt on every call, as the official code builds them:
    `dirac_sample` over it runs Algorithm 1 with the official code's operator cost."""

    def __init__(self, family: DegradationFamily) -> None:
        self.family = family
        self.kind = family.kind
        self.severity_parameter = family.severity_parameter
        self.image_size, self.channels = family.image_size, family.channels

    @classmethod
    def from_config(cls, cfg: dict, image_size, device="cpu", dtype=torch.float32, channels: int = 3) -> "OfficialStyleFamily":
        raise TypeError("OfficialStyleFamily wraps a built family: OfficialStyleFamily(family)")

    @classmethod
    def from_dict(cls, spec: dict, device="cpu", severity=None, channels: int = 3) -> "OfficialStyleFamily":
        raise TypeError("OfficialStyleFamily wraps a built family: OfficialStyleFamily(family)")

    def apply(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        ts = [float(t)] * x.shape[0] if not torch.is_tensor(t) or t.ndim == 0 else [float(v) for v in t]
        return torch.cat([official_apply(self.family, x[i : i + 1], ts[i]) for i in range(x.shape[0])])

    def at(self, t: float) -> LinearOperator:
        return _OfficialOperator(self.family, t)

    def to_dict(self) -> dict:
        return self.family.to_dict()


def official_style_sample(model: nn.Module, family: DegradationFamily, noise: GeometricNoise, y: torch.Tensor, generators: Sequence[torch.Generator], settings: SamplerSettings) -> tuple[torch.Tensor, int]:
    """The reverse process one image at a time (batch 1), as the official sampler runs it: the
    same `dirac_sample`, over operators rebuilt on every application."""
    if len(generators) != y.shape[0]:
        raise ValueError(f"need one generator per image ({y.shape[0]}), got {len(generators)}")
    official = OfficialStyleFamily(family)
    outs, nfe = [], 0
    for i in range(y.shape[0]):
        out, nfe = dirac_sample(model, official, noise, y[i : i + 1], [generators[i]], settings)
        outs.append(out)
    return torch.cat(outs), nfe


def official_style_loss(model: nn.Module, x0: torch.Tensor, generator: torch.Generator, family: DegradationFamily, noise: GeometricNoise, dt: float, clean_space_at_tau0: bool = False) -> torch.Tensor:
    """The incremental-reconstruction loss with per-sample operators (draws as `ir_loss`)."""
    b = x0.shape[0]
    dev = generator.device
    t = torch.rand(b, generator=generator, device=dev, dtype=torch.float32).to(torch.float64)
    z = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float32).to(x0.device)
    sigma = noise(t).float()
    tau = (t - dt).clamp_min(0.0)
    x0 = x0.float()
    with torch.no_grad():
        y_t = torch.cat([official_apply(family, x0[i : i + 1], float(t[i])) + float(sigma[i]) * z[i : i + 1] for i in range(b)])
    x0_hat = model(y_t, sigma.to(x0.device)).float()
    total = x0_hat.new_zeros(())
    for i in range(b):
        if clean_space_at_tau0 and float(tau[i]) == 0.0:
            err = x0_hat[i : i + 1] - x0[i : i + 1]
        else:
            err = official_apply(family, x0_hat[i : i + 1], float(tau[i])) - official_apply(family, x0[i : i + 1], float(tau[i]))
        total = total + err.pow(2).sum() / float(sigma[i]) ** 2
    return total / b


def official_style_operators(family: DegradationFamily, x0: torch.Tensor, t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """The loss's operator work alone, per sample: A_t(x0) and A_tau applied twice."""
    out = []
    for i in range(x0.shape[0]):
        xi = x0[i : i + 1]
        y = official_apply(family, xi, float(t[i]))
        out.append(y + official_apply(family, y, float(tau[i])) - official_apply(family, xi, float(tau[i])))
    return torch.cat(out)


def batched_operators(family: DegradationFamily, x0: torch.Tensor, t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """The same operator work as `official_style_operators`, batched as `ir_loss` does it (A_tau once, by linearity)."""
    y = family.apply(x0, t)
    return y + family.apply(y - x0, tau)
