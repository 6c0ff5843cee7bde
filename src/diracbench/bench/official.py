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
  batch size 1 only: `official_style_sample` loops over images, and within each image over steps.
- **One sample at a time in the loss.** The official data transform draws t and degrades each
  sample separately, and its incremental-reconstruction loss applies A_tau sample by sample (to
  the estimate and to x0, not using linearity); the network itself runs on the whole batch, as
  in the official trainer. `official_style_loss` does the same.

Left out on both sides of the comparison: the official per-step metric logging (PSNR, SSIM,
LPIPS at every step), which diracbench makes optional; the comparison isolates batching and
operator reuse. Random numbers come from the same per-image generators as the batched code.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from diracbench.dirac.sampler import GUIDANCE_SIGNS, SamplerSettings
from diracbench.operators import DegradationFamily, GaussianBlurFamily, GeometricNoise, SmoothMaskFamily


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


def official_apply(family: DegradationFamily, x: torch.Tensor, t: float) -> torch.Tensor:
    """A_t(x) for one image (1, C, H, W), with the operator built from scratch for this call."""
    if isinstance(family, GaussianBlurFamily):
        std = float(family.std_at(torch.tensor(float(t), dtype=torch.float64)))
        k = family.kernel_size
        c = x.shape[1]
        conv = nn.Conv2d(c, c, k, groups=c, bias=False).to(x.device)
        conv.weight.requires_grad_(False)
        kernel = torch.from_numpy(official_blur_kernel(std, k)).to(x.device, torch.float32)
        conv.weight.copy_(kernel.expand(c, 1, k, k))
        pad = k // 2
        return conv(F.pad(x, (pad, pad, pad, pad), mode="reflect"))
    if isinstance(family, SmoothMaskFamily):
        std = float(family.std_at(torch.tensor(float(t), dtype=torch.float64)))
        mask = torch.from_numpy(official_mask(std, family.image_size, family.power, family.centre)).to(x.device, torch.float32)
        return mask * x
    raise TypeError(f"no official-style operator for {type(family).__name__}")


@torch.no_grad()
def _no_grad_apply(family: DegradationFamily, x: torch.Tensor, t: float) -> torch.Tensor:
    return official_apply(family, x, t)


def _sample_one(model: nn.Module, family: DegradationFamily, noise: GeometricNoise, y: torch.Tensor, generator: torch.Generator, s: SamplerSettings) -> tuple[torch.Tensor, int]:
    """Algorithm 1 on one image (1, C, H, W), every operator rebuilt where it is used."""
    sign = GUIDANCE_SIGNS[s.guidance_sign]
    sigma_1 = float(noise(1.0))
    y = y.float()
    y_t = y.clone()
    for i in range(s.steps):
        t, t_next = s.t_at(i), s.t_at(i + 1)
        s2, sn2 = float(noise(t)) ** 2, float(noise(t_next)) ** 2
        sig = torch.tensor([math.sqrt(s2)], device=y.device, dtype=torch.float32)
        last = s.is_last(i)
        returns_x0 = last and s.output == "x0_hat"
        guided = s.guidance != "none" and s2 > sn2 and not returns_x0
        if guided:
            with torch.enable_grad():
                y_in = y_t.detach().requires_grad_(True)
                x0_hat = model(y_in, sig).float()
                resid2 = (y - official_apply(family, x0_hat, 1.0)).pow(2).sum()
                (grad,) = torch.autograd.grad(resid2, y_in)
            x0_hat = x0_hat.detach()
        else:
            with torch.no_grad():
                x0_hat = model(y_t, sig).float()
        if returns_x0:
            return x0_hat, i + 1
        a_t = _no_grad_apply(family, x0_hat, t)
        if s.estimator == "small_look_ahead":
            update = (s.dt / s.delta) * (_no_grad_apply(family, x0_hat, max(t - s.delta, 0.0)) - a_t)
        elif s.estimator == "look_back" and i > 0:
            update = a_t - _no_grad_apply(family, x0_hat, s.t_at(i - 1))
        else:
            update = _no_grad_apply(family, x0_hat, t_next) - a_t
        if s2 > sn2:
            update = update + ((s2 - sn2) / s2) * (a_t - y_t)
            if guided:
                c = s.zeta * 0.5 / sigma_1**2 if s.guidance == "std" else s.zeta / max(float(resid2.detach().sqrt()), 1e-12)
                update = update + sign * (s2 - sn2) * c * grad
            z = torch.randn(tuple(y_t.shape[1:]), generator=generator, device=generator.device, dtype=torch.float32).to(y.device)
            update = update + math.sqrt(s2 - sn2) * z.unsqueeze(0)
        y_t = (y_t + update).detach()
        if last:
            return y_t, i + 1
    raise AssertionError("unreachable: the last step always returns")


def official_style_sample(model: nn.Module, family: DegradationFamily, noise: GeometricNoise, y: torch.Tensor, generators: Sequence[torch.Generator], settings: SamplerSettings) -> tuple[torch.Tensor, int]:
    """The reverse process one image at a time (batch 1), as the official sampler runs it."""
    if len(generators) != y.shape[0]:
        raise ValueError(f"need one generator per image ({y.shape[0]}), got {len(generators)}")
    outs, nfe = [], 0
    for i in range(y.shape[0]):
        out, nfe = _sample_one(model, family, noise, y[i : i + 1], generators[i], settings)
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
