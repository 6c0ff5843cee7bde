"""DDRM (Kawar et al., NeurIPS 2022): diffusion sampling in the spectral domain of A = U S V^T.

Follows the official sampler (bahjat-kawar/ddrm, functions/denoising.py) as described in
baselines.md §4: `steps` network evaluations on the skip grid t = T - T/steps, ..., 0 (950, ..., 0
for 20 steps), eta = 0.85 and eta_b = 1 in the paper, measurement y = 2 y01 - A(1) in [-1, 1]
with sigma_y = 2 sigma_1. In the variance-exploding view xbar = x_t / sqrt(abar_t),
sigma_t = sqrt((1 - abar_t) / abar_t), with m = V^T x0_hat, e = V^T eps_hat and c = U^T y, each
spectral component moves to the next level sigma' by one of three rules:

  s = 0 (no information):       m + sqrt(1 - eta^2) sigma' e + eta sigma' z
  s sigma' <= sigma_y (noisier): m + sqrt(1 - eta^2) sigma' (c - s m) / sigma_y + eta sigma' z
  s sigma' > sigma_y (cleaner):  (1 - eta_b) m + eta_b c / s + sqrt(sigma'^2 - eta_b^2 sigma_y^2 / s^2) z

Deliberate difference from the official code (§4.8, the paper's intent): zero singular values,
including the ones zeroed by the threshold, always take the "no information" rule. The official
sampler sends them to the "noisier" rule when sigma_y > 0, which re-injects a fixed multiple of the
measurement noise at every step. Thresholds, by the structure of the operator's spectrum
(`SpectralDecomposition.spectrum`): a separable spectrum s = outer(s_r, s_c) (the blur) has its 1-D
singular values below `blur_threshold` zeroed before forming the 2-D products (official: 3e-2); an
elementwise one (the mask, super-resolution) its values below `mask_threshold` (tiny but non-zero
mask values would otherwise re-inject noise).
The three branches are computed with guarded denominators and selected with `where`, so a zero
singular value never produces inf or NaN. The output is the x0 estimate of the t = 0 evaluation.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch

from diracbench.errors import UserError
from diracbench.methods.base import Problem, Reconstruction, RunContext
from diracbench.metrics.recorder import StepCallback, recording_seconds
from diracbench.operators import SpectralDecomposition
from diracbench.operators.base import ELEMENTWISE, SEPARABLE
from diracbench.prior.sampling import batches, measurement_pm, open_trajectory, prior_from_context, record, require
from diracbench.prior.schedule import DDPMSchedule
from diracbench.seeding import image_generators, randn_per_image

# Registry entry (read as a literal by diracbench.methods.registry, without importing this module).
METHOD_SPECS = {
    "ddrm": {
        "display": "DDRM",
        "order": 40,
        "env": "torch",
        "inputs": ["prior"],
        "tunes": ["steps", "eta", "eta_b", "blur_threshold", "mask_threshold"],
        "schema": "ddrm.schema.yaml",
        "figures": ["consistency", "lpips-nfe"],
        "resources": {"tune": {"mem_mb": 4000, "runtime": 60}, "sample": {"mem_mb": 4000, "runtime": 60}},
        "gpu": True,
        "defaults": {
            "hparams": {"steps": 20, "eta": 0.85, "eta_b": 1.0, "blur_threshold": 3.0e-2, "mask_threshold": 1.0e-2, "batch_size": 64},
            "grid": {"deblur": {"blur_threshold": [1.0e-2, 3.0e-2, 1.0e-1]}, "inpaint": {"mask_threshold": [1.0e-2, 3.0e-2, 1.0e-1]}},
            "objective": "auto",
            "max_images": {"val": None, "test": None},
            "trajectory": {"every": 1, "lpips_every": 5},
        },
    },
}

HPARAMS = ("steps", "eta", "eta_b", "blur_threshold", "mask_threshold", "batch_size", "prior")
EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


def thresholded_singular_values(svd: SpectralDecomposition, blur_threshold: float, mask_threshold: float) -> torch.Tensor:
    """Singular values (1, H, W) with the "no information" components set to exactly 0."""
    thresholds = {SEPARABLE: blur_threshold, ELEMENTWISE: mask_threshold}
    if svd.spectrum not in thresholds:
        raise UserError(f"ddrm has no threshold for a {svd.spectrum!r} spectrum; it knows {sorted(thresholds)}")
    return svd.thresholded(thresholds[svd.spectrum])


def time_grid(num_timesteps: int, steps: int) -> list[int]:
    """The official skip grid, increasing: range(0, T, T // steps)."""
    if not 1 <= steps <= num_timesteps:
        raise UserError(f"ddrm: steps must be between 1 and the prior's num_timesteps {num_timesteps} (got {steps})")
    return list(range(0, num_timesteps, num_timesteps // steps))


def skip_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """The sampler's timesteps: the official skip grid walked down (950, 900, ..., 0 for 20 steps)."""
    return time_grid(num_timesteps, steps)[::-1]


def ddrm_sample(
    eps_fn: EpsFn,
    svd: SpectralDecomposition,
    s: torch.Tensor,
    y_pm: torch.Tensor,
    sigma_y: float,
    schedule: DDPMSchedule,
    timesteps: Sequence[int],
    eta: float,
    eta_b: float,
    generators: list[torch.Generator],
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DDRM on a batch y_pm (B, C, H, W) down the network timesteps `timesteps` (decreasing, e.g.
    `skip_timesteps(T, steps)`); `s` the (thresholded) singular values, broadcastable to one image.
    Returns the x0 estimate of the last timestep in [-1, 1] (not clipped); `callback(record)`
    sees each step's x0 estimate."""
    ts = [int(t) for t in timesteps]
    if not ts or ts[-1] < 0 or any(a <= b for a, b in zip(ts, ts[1:])):
        raise UserError(f"ddrm: timesteps must decrease to a last one >= 0 (got {ts})")
    device, dtype = y_pm.device, y_pm.dtype
    shape = y_pm.shape
    s = s.to(device=device, dtype=dtype).expand(shape[1:])
    info = s > 0
    s_safe = torch.where(info, s, torch.ones_like(s))
    sy_safe = max(float(sigma_y), 1e-12)
    c = svd.Ut(y_pm)
    # The next level of the last step is -1: no further step, its x0 estimate is the output.
    ts_next = ts[1:] + [-1]

    def noise() -> torch.Tensor:
        return randn_per_image(shape, generators, dtype=dtype).to(device)

    sigma_T = schedule.ve_sigma(ts[0])
    large = info & (s * sigma_T > sigma_y)
    init = c / s_safe + torch.sqrt((sigma_T**2 - (sigma_y / s_safe) ** 2).clamp_min(0.0)) * noise()
    xbar = torch.where(large, init, sigma_T * noise())
    x = schedule.alpha_bar(ts[0]) ** 0.5 * svd.V(xbar)
    for step, (t, t_next) in enumerate(zip(ts, ts_next)):
        ab = schedule.alpha_bar(t)
        with torch.no_grad():
            eps = eps_fn(x, t)
        x0 = (x - (1.0 - ab) ** 0.5 * eps) / ab**0.5
        if callback is not None:
            callback(record(step, t, schedule.num_timesteps, step + 1, x0, None, t_next < 0))
        if t_next < 0:
            return x0
        m, e = svd.Vt(x0), svd.Vt(eps)
        sig = schedule.ve_sigma(t_next)
        z = noise()
        no_info = m + (1.0 - eta**2) ** 0.5 * sig * e + eta * sig * z
        noisier = m + (1.0 - eta**2) ** 0.5 * sig * (c - s * m) / sy_safe + eta * sig * z
        cleaner = (1.0 - eta_b) * m + eta_b * c / s_safe + torch.sqrt((sig**2 - (eta_b * sigma_y / s_safe) ** 2).clamp_min(0.0)) * z
        xbar = torch.where(~info, no_info, torch.where(s * sig > sigma_y, cleaner, noisier))
        x = schedule.alpha_bar(t_next) ** 0.5 * svd.V(xbar)
    raise AssertionError("unreachable: the grid ends at t = 0")


def _check(hparams: dict) -> None:
    require(hparams, HPARAMS, "ddrm")
    if not 0.0 <= float(hparams["eta"]) <= 1.0 or not 0.0 <= float(hparams["eta_b"]) <= 1.0:
        raise UserError("ddrm: eta and eta_b must lie in [0, 1]")


def reconstruct(problem: Problem, hparams: dict, ctx: RunContext) -> Reconstruction:
    _check(hparams)
    model, schedule = prior_from_context(problem, hparams, ctx)
    log = open_trajectory(problem, hparams, ctx, "ddrm")
    y_pm, sigma_y = measurement_pm(problem)
    svd = problem.operator.svd()
    s = thresholded_singular_values(svd, float(hparams["blur_threshold"]), float(hparams["mask_threshold"]))
    seeds = problem.image_seeds("ddrm", ctx.seed)
    ts = skip_timesteps(schedule.num_timesteps, int(hparams["steps"]))
    nfe = len(ts)
    x_hat = np.empty(tuple(problem.y.shape), dtype=np.float32)
    seconds = np.empty(len(problem), dtype=np.float64)

    def eps_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        return model(x, t)[0]

    for sl in batches(len(problem), int(hparams["batch_size"])):
        images = np.arange(sl.start, sl.stop)
        gens = image_generators([seeds[i] for i in images], device=ctx.device)
        callback = None if log is None else log.bind(images)
        start, recorded = time.perf_counter(), recording_seconds(log)
        out = ddrm_sample(eps_fn, svd, s, y_pm[sl], sigma_y, schedule, ts, float(hparams["eta"]), float(hparams["eta_b"]), gens, callback)
        x_hat[sl] = ((out + 1.0) / 2.0).clamp(0.0, 1.0).cpu().numpy()
        seconds[sl] = (time.perf_counter() - start - (recording_seconds(log) - recorded)) / len(images)
    return Reconstruction(x_hat, np.full(len(problem), nfe), seconds, None if log is None else log.frame())
