"""DPS (Chung et al., ICLR 2023): ancestral DDPM sampling with measurement guidance.

The loop of the official code (baselines.md §3.2), per step k with network timestep t_k:
  x0 = clip((x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t), -1, 1)
  x' = c1 x0 + c2 x_t + exp(log_var / 2) z         (no noise at the last step)
  x_{t-1} = x' - scale * d/dx_t ||y - A x0||_2        (per-image, non-squared norm)
The gradient goes back through the network. Each image's residual norm is its own (the official
code takes one norm over the whole batch, which couples images; pitfall 5), and each image may
carry its own step size, so a whole tuning grid runs as one batch (`reconstruct_grid`).

The measurement is the shared y01 converted exactly to [-1, 1] (noise std 2 sigma_1, the same
realisation as every other method). Variance: 'fixedsmall' (posterior beta-tilde, what a
3-channel epsilon model needs), 'fixedlarge' (beta) or 'learned' (ADM's learned range; needs a
6-channel checkpoint). `steps` < T respaces the schedule as guided-diffusion does; the paper uses
all 1000 steps. NFE counts network evaluations; each one also costs a backward pass.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np
import torch

from diracbench.errors import UserError
from diracbench.methods.base import Problem, Reconstruction, RunContext, batched_grid
from diracbench.metrics.recorder import StepCallback, Trajectory, recording_seconds
from diracbench.operators import LinearOperator
from diracbench.prior.sampling import batches, measurement_pm, open_trajectory, prior_from_context, record, require
from diracbench.prior.schedule import SpacedSchedule
from diracbench.progress import progress
from diracbench.seeding import image_generators, randn_per_image

# Registry entry (read as a literal by diracbench.methods.registry, without importing this module).
METHOD_SPECS = {
    "dps": {
        "display": "DPS",
        "order": 30,
        "env": "torch",
        "inputs": ["prior"],
        "tunes": ["steps", "scale", "variance", "clip_x0"],
        "schema": "dps.schema.yaml",
        "figures": ["consistency", "lpips-nfe"],
        "resources": {"tune": {"mem_mb": 8000, "runtime": 120}, "sample": {"mem_mb": 8000, "runtime": 240}},
        "gpu": True,
        # The embedded default's section: used where the config has no `dps:` (or lacks a key).
        "defaults": {
            "hparams": {"steps": 1000, "scale": 0.5, "variance": "fixedsmall", "clip_x0": True, "batch_size": 64},
            "grid": {"deblur": {"scale": [0.2, 0.5, 1.0]}, "inpaint": {"scale": [0.2, 0.5, 1.0]}},
            "objective": "lpips",
            "max_images": {"val": 2, "test": 8},
            "trajectory": {"every": 50, "lpips_every": 250},
        },
    },
}

HPARAMS = ("steps", "scale", "variance", "clip_x0", "batch_size", "prior")
VARIANCES = ("fixedsmall", "fixedlarge", "learned")
EpsFn = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor | None]]


def guidance(eps_fn: EpsFn, operator: LinearOperator, y_pm: torch.Tensor, x_t: torch.Tensor, t_model: int, abar_t: float, clip_x0: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One network evaluation with the DPS gradient.

    Returns (x0_hat, v, grad, residual_norm, eps): grad[i] = d ||y_i - A x0_hat_i|| / d x_t[i],
    back-propagated through the network.
    """
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        eps, v = eps_fn(x, t_model)
        x0 = (x - (1.0 - abar_t) ** 0.5 * eps) / abar_t**0.5
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        norms = (y_pm - operator.forward(x0)).flatten(1).norm(dim=1)
        (grad,) = torch.autograd.grad(norms.sum(), x)
    return x0.detach(), None if v is None else v.detach(), grad, norms.detach(), eps.detach()


def dps_sample(
    eps_fn: EpsFn,
    operator: LinearOperator,
    y_pm: torch.Tensor,
    schedule: SpacedSchedule,
    scales: torch.Tensor,
    variance: str,
    generators: list[torch.Generator],
    clip_x0: bool = True,
    callback: StepCallback | None = None,
    desc: str = "dps",
) -> torch.Tensor:
    """DPS on a batch: y_pm (B, C, H, W) in [-1, 1], one step size and one generator per image.

    Returns the final iterate x_0 in [-1, 1] (not clipped). `callback(record)` sees every step:
    the clipped x0 estimate and the new iterate x_{t-1} (step counts sampler iterations from 0).
    """
    if variance not in VARIANCES:
        raise UserError(f"dps: variance must be one of {VARIANCES} (got {variance!r})")
    B = y_pm.shape[0]
    device, dtype = y_pm.device, y_pm.dtype
    scales = torch.as_tensor(scales, dtype=dtype, device=device).reshape(B, 1, 1, 1)
    c1, c2 = schedule.posterior_mean_coefs
    ab = schedule.alphas_cumprod
    fixed_logvar = schedule.log_variance(variance) if variance != "learned" else None
    min_log, max_log = schedule.learned_range_bounds()
    x = randn_per_image(y_pm.shape, generators, dtype=dtype).to(device)
    K = len(schedule)
    bar = progress(total=K, desc=desc, unit="step")
    for step, k in enumerate(range(K - 1, -1, -1)):
        t_model = schedule.timesteps[k]
        x0, v, grad, _, _ = guidance(eps_fn, operator, y_pm, x, t_model, float(ab[k]), clip_x0)
        mean = float(c1[k]) * x0 + float(c2[k]) * x
        if k > 0:
            if variance == "learned":
                if v is None:
                    raise UserError("dps: variance 'learned' needs a prior with learned-range output channels (ADM checkpoints); use 'fixedsmall' for a 3-channel epsilon model")
                frac = (v + 1.0) / 2.0
                logvar = frac * float(max_log[k]) + (1.0 - frac) * float(min_log[k])
            else:
                logvar = torch.full_like(x, float(fixed_logvar[k]))
            mean = mean + torch.exp(0.5 * logvar) * randn_per_image(x.shape, generators, dtype=dtype).to(device)
        x = (mean - scales * grad).detach()
        if callback is not None:
            callback(record(step, t_model, schedule.num_timesteps, step + 1, x0, x, k == 0))
        bar.update(1)
    bar.close()
    return x


def _check(hparams: dict) -> None:
    require(hparams, HPARAMS, "dps")
    if hparams["variance"] not in VARIANCES:
        raise UserError(f"dps: hparams.variance must be one of {VARIANCES} (got {hparams['variance']!r})")


def _run(problem: Problem, entries: list[tuple[int, float]], hparams: dict, ctx: RunContext, log: Trajectory | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Sample every (image index, step size) entry into `log`; returns x_hat01, seconds per entry, NFE."""
    _check(hparams)
    model, base = prior_from_context(problem, hparams, ctx)
    schedule = base.spaced(int(hparams["steps"]))
    y_pm, _ = measurement_pm(problem)
    seeds = problem.image_seeds("dps", ctx.seed)
    x_hat = np.empty((len(entries), *problem.y.shape[1:]), dtype=np.float32)
    seconds = np.empty(len(entries), dtype=np.float64)

    def eps_fn(x: torch.Tensor, t: int):
        return model(x, t)

    for sl in batches(len(entries), int(hparams["batch_size"])):
        chunk = entries[sl]
        images = np.array([i for i, _ in chunk])
        scales = torch.tensor([s for _, s in chunk], dtype=problem.y.dtype)
        gens = image_generators([seeds[i] for i in images], device=ctx.device)
        callback: StepCallback | None = None if log is None else log.bind(images)
        start, recorded = time.perf_counter(), recording_seconds(log)
        out = dps_sample(eps_fn, problem.operator, y_pm[images], schedule, scales, hparams["variance"], gens, bool(hparams["clip_x0"]), callback, desc=f"dps {sl.start + len(chunk)}/{len(entries)}")
        x_hat[sl] = ((out + 1.0) / 2.0).clamp(0.0, 1.0).cpu().numpy()
        seconds[sl] = (time.perf_counter() - start - (recording_seconds(log) - recorded)) / len(chunk)
    return x_hat, seconds, len(schedule)


def reconstruct(problem: Problem, hparams: dict, ctx: RunContext) -> Reconstruction:
    _check(hparams)
    entries = [(i, float(hparams["scale"])) for i in range(len(problem))]
    log = open_trajectory(problem, hparams, ctx, "dps")
    x_hat, seconds, nfe = _run(problem, entries, hparams, ctx, log)
    return Reconstruction(x_hat, np.full(len(problem), nfe), seconds, None if log is None else log.frame())


def grid_entries(n: int, candidates: list[dict]) -> list[tuple[int, int]] | None:
    """(candidate, image) pairs in the order `reconstruct_grid` samples them, in batches of the
    first candidate's batch_size; None when the candidates differ in more than `scale` (then
    each one is reconstructed on its own). Tuning shards cut this list between batches."""
    base = {k: v for k, v in candidates[0].items() if k != "scale"}
    if any({k: v for k, v in c.items() if k != "scale"} != base for c in candidates):
        return None
    return [(j, i) for j in range(len(candidates)) for i in range(n)]


def reconstruct_entries(problem: Problem, candidates: list[dict], entries: list[tuple[int, int]], ctx: RunContext) -> Reconstruction:
    """One reconstruction per (candidate, image) entry of `grid_entries`, batched as listed."""
    for c in candidates:
        _check(c)
    base = {k: v for k, v in candidates[0].items() if k != "scale"}
    x_hat, seconds, nfe = _run(problem, [(i, float(candidates[j]["scale"])) for j, i in entries], base | {"scale": None}, ctx, None)
    return Reconstruction(x_hat, np.full(len(entries), nfe), seconds)


def reconstruct_grid(problem: Problem, candidates: list[dict], ctx: RunContext) -> list[Reconstruction]:
    """All candidates in one batched run when they differ only in `scale` (the usual DPS grid)."""
    return batched_grid(sys.modules[__name__], problem, candidates, ctx)
