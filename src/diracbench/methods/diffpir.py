"""DiffPIR (Zhu et al., CVPRW 2023): plug-and-play restoration by half-quadratic splitting on the
shared DDPM prior (reference: scale-and-extensions.md §4; official yuanzhi-zhu/DiffPIR).

The sampler walks down a list of network timesteps t_0 > t_1 > ... > t_{K-1} = 0, K = `steps`.
With abar_t the prior's cumulative alpha and sigma_bar_t = sqrt(1 - abar_t) / sqrt(abar_t) the
noise level of x_t / sqrt(abar_t) in [-1, 1] units, each step k < K - 1 does

  x0     = clip((x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t), -1, 1)   (the prior's guess)
  x0_hat = argmin_x ||y - A x||^2 + rho_t ||x - x0||^2                       (data step, exact)
  eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)
  x_t'   = sqrt(abar_t') x0_hat + sqrt(1 - abar_t') (sqrt(1 - zeta) eps_hat + sqrt(zeta) z)

with t' = t_{k+1} and z ~ N(0, I). The data step is one `operator.normal_solve`:
(A^T A + rho I) x = A^T y + rho x0, exact for every operator here (no FFT approximation of the
reflect-padded blur, no binary-mask shortcut for the smooth mask).

Time grid: the official `skip_type="quad"`: seq_i = int(sqrt(i T^2 / (K - 1))), the last entry
minus one, t_i = T - 1 - seq_i (100 steps: 999, 899, 857, 825, ..., 10, 5, 0; 20 steps: 999,
770, 675, ..., 54, 26, 0). For T = 1000 the grid has distinct timesteps only up to K = 501;
larger K, and K = 1 (which the formula sends to t = T), are refused.

Start: x_T ~ N(0, I) from each image's own generator (the paper's Algorithm 1; the official
scripts noise an initial guess from t = 999, where sqrt(abar) = 0.006, i.e. practically the same).

Units of rho: y and x are in [-1, 1] (y = 2 y01 - A(1), noise std sigma_y = 2 sigma_1) and
rho_t = lam * sigma_y^2 / sigma_bar_t^2, both noise levels in the same units. The official code
puts sigma_n in [0, 1] units next to sigma_bar_t in [-1, 1] units, so its rho is a quarter of
ours at the same lambda: official lambda = 4 * lam (the paper's deblurring lambda 7 is lam 1.75
here; deepinv's lambda_ weighs the prox twice as much again). Like the official max(0.001,
sigma_n), sigma_y has a floor of 0.002 so that noiseless data keep a finite rho. Larger lam
trusts the prior more; lam -> infinity turns the data step off (x0_hat = x0, a DDIM-like sampler
for zeta = 0). zeta in [0, 1] is the share of fresh noise in the re-noising (0 deterministic,
1 all fresh).

Last step and NFE: the official loop also evaluates the network at t = 0, but uses neither that
prediction nor a data step; its output is x, the t = 0 iterate made by the step before (residual
noise sqrt(1 - abar_0) = 0.01 in [-1, 1]). We return the same x and skip that unused call, so a
run makes steps - 1 network evaluations, and that is the NFE reported (99 for the default 100
steps; the paper and official scripts count 100). The trajectory log records x0_hat after each
data step and, at the last step (t = 0), the output itself.

Every quantity is per image: lam and zeta may differ between images of a batch, and every image
draws its noise from its own generator (all images draw z at every step, whatever their zeta),
so an image's result does not depend on the batch it is in; a whole (lam, zeta) tuning grid runs
batched (`reconstruct_grid`, `grid_entries`/`reconstruct_entries` for sharded tuning).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Sequence

import numpy as np
import torch

from diracbench.errors import UserError
from diracbench.methods.base import Problem, Reconstruction, RunContext, batched_grid
from diracbench.metrics.recorder import StepCallback, Trajectory, recording_seconds
from diracbench.operators import LinearOperator
from diracbench.prior.sampling import batches, measurement_pm, open_trajectory, prior_from_context, prior_settings, record, require
from diracbench.prior.schedule import DDPMSchedule
from diracbench.progress import progress
from diracbench.seeding import image_generators, randn_per_image

# Registry entry (read as a literal by diracbench.methods.registry, without importing this module).
METHOD_SPECS = {
    "diffpir": {
        "display": "DiffPIR",
        "order": 35,
        "env": "torch",
        "inputs": ["prior"],
        "tunes": ["steps", "lam", "zeta"],
        "schema": "diffpir.schema.yaml",
        "figures": ["consistency", "lpips-nfe"],
        "resources": {"tune": {"mem_mb": 4000, "runtime": 60}, "sample": {"mem_mb": 4000, "runtime": 120}},
        "gpu": True,
        "defaults": {
            "hparams": {"steps": 100, "lam": 7.0, "zeta": 0.3, "batch_size": 64},
            "grid": {
                "deblur": {"lam": [1.0, 7.0, 25.0], "zeta": [0.1, 0.3, 0.6]},
                "inpaint": {"lam": [1.0, 7.0, 25.0], "zeta": [0.1, 0.3, 0.6]},
                "sr4": {"lam": [1.0, 7.0, 25.0], "zeta": [0.1, 0.3, 0.6]},
            },
            "objective": "auto",
            "max_images": {"val": 4, "test": None},
            "trajectory": {"every": 10, "lpips_every": 50},
        },
    },
}

HPARAMS = ("steps", "lam", "zeta", "batch_size", "prior")
# Grid keys that may differ between the images of one batch.
PER_IMAGE = ("lam", "zeta")
# [-1, 1] units: the official max(0.001, sigma_n) floor, sigma_n in [0, 1] units.
SIGMA_Y_FLOOR = 2e-3
EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


def _quad(num_timesteps: int, steps: int) -> list[int]:
    seq = [int(s) for s in np.sqrt(np.linspace(0.0, float(num_timesteps) ** 2, steps))]
    seq[-1] -= 1
    return [num_timesteps - 1 - s for s in seq]


def quad_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """The official quadratic grid (decreasing, ends at 0) of `steps` distinct timesteps."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 2 <= steps <= num_timesteps:
        raise UserError(f"diffpir: steps must be an integer between 2 and the prior's num_timesteps {num_timesteps} (got {steps!r})")
    ts = _quad(num_timesteps, int(steps))
    if len(set(ts)) < len(ts):
        most = next(k for k in range(int(steps) - 1, 1, -1) if len(set(_quad(num_timesteps, k))) == k)
        raise UserError(f"diffpir: steps {steps} repeats timesteps on the quadratic grid of a {num_timesteps}-step prior; use at most {most}")
    return ts


def rho_schedule(lams: torch.Tensor, sigma_y: float, abar: float) -> torch.Tensor:
    """rho_t = lam sigma_y^2 / sigma_bar_t^2 per image, all in [-1, 1] units."""
    sy = max(float(sigma_y), SIGMA_Y_FLOOR)
    return lams * (sy * sy * abar / (1.0 - abar))


def diffpir_sample(
    eps_fn: EpsFn,
    operator: LinearOperator,
    y_pm: torch.Tensor,
    sigma_y: float,
    schedule: DDPMSchedule,
    timesteps: Sequence[int],
    lams: torch.Tensor | float,
    zetas: torch.Tensor | float,
    generators: list[torch.Generator],
    clip_x0: bool = True,
    callback: StepCallback | None = None,
    desc: str = "diffpir",
) -> torch.Tensor:
    """DiffPIR on a batch y_pm (B, C, H, W) in [-1, 1] with noise std sigma_y, one lam, zeta and
    generator per image, down the network timesteps `timesteps` (decreasing to 0, e.g.
    `quad_timesteps(T, steps)`). Returns the t = 0 iterate in [-1, 1] (not clipped).
    `callback(record)` sees x0_hat after each data step, with the new iterate, and at the last
    step (t = 0) the output itself.

    `clip_x0=False` keeps the prior's x0 prediction unclipped (the official code clips; the
    analytic tests switch it off to keep every step affine)."""
    B = y_pm.shape[0]
    device, dtype = y_pm.device, y_pm.dtype
    lams = torch.as_tensor(lams, dtype=dtype, device=device).reshape(-1, 1, 1, 1).expand(B, 1, 1, 1)
    zetas = torch.as_tensor(zetas, dtype=dtype, device=device).reshape(-1, 1, 1, 1).expand(B, 1, 1, 1)
    if not bool((lams > 0).all()) or not bool(((zetas >= 0) & (zetas <= 1)).all()):
        raise UserError("diffpir: need lam > 0 and zeta in [0, 1] for every image")
    keep, fresh = torch.sqrt(1.0 - zetas), torch.sqrt(zetas)
    ts = [int(t) for t in timesteps]
    if len(ts) < 2 or ts[-1] != 0 or any(a <= b for a, b in zip(ts, ts[1:])):
        raise UserError(f"diffpir: timesteps must decrease to 0 in at least two steps (got {ts})")
    aty = operator.adjoint(y_pm)

    def noise() -> torch.Tensor:
        return randn_per_image(y_pm.shape, generators, dtype=dtype).to(device)

    x = noise()
    bar = progress(total=len(ts) - 1, desc=desc, unit="step")
    for step, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        ab, ab_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
        with torch.no_grad():
            eps = eps_fn(x, t)
        x0 = (x - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        rho = rho_schedule(lams, sigma_y, ab)
        x0_hat = operator.normal_solve(aty + rho * x0, rho)
        eps_hat = (x - math.sqrt(ab) * x0_hat) / math.sqrt(1.0 - ab)
        # z is drawn for every image, whatever its zeta, so the random stream of an image does not
        # depend on the settings of the others in its batch.
        x = math.sqrt(ab_next) * x0_hat + math.sqrt(1.0 - ab_next) * (keep * eps_hat + fresh * noise())
        if callback is not None:
            callback(record(step, t, schedule.num_timesteps, step + 1, x0_hat, x, False))
        bar.update(1)
    bar.close()
    if callback is not None:
        callback(record(len(ts) - 1, ts[-1], schedule.num_timesteps, len(ts) - 1, x, None, True))
    return x


def _check(hparams: dict) -> None:
    require(hparams, HPARAMS, "diffpir")
    lam, zeta = hparams["lam"], hparams["zeta"]
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam <= 0:
        raise UserError(f"diffpir: lam must be a positive number (got {lam!r})")
    if isinstance(zeta, bool) or not isinstance(zeta, (int, float)) or not 0.0 <= zeta <= 1.0:
        raise UserError(f"diffpir: zeta must lie in [0, 1] (got {zeta!r})")
    quad_timesteps(int(prior_settings(hparams)["num_timesteps"]), hparams["steps"])


def _run(problem: Problem, entries: list[tuple[int, float, float]], hparams: dict, ctx: RunContext, log: Trajectory | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Sample every (image index, lam, zeta) entry into `log`; returns x_hat01, seconds per entry, NFE."""
    model, schedule = prior_from_context(problem, hparams, ctx)
    ts = quad_timesteps(schedule.num_timesteps, int(hparams["steps"]))
    nfe = len(ts) - 1
    y_pm, sigma_y = measurement_pm(problem)
    seeds = problem.image_seeds("diffpir", ctx.seed)
    x_hat = np.empty((len(entries), *problem.y.shape[1:]), dtype=np.float32)
    seconds = np.empty(len(entries), dtype=np.float64)

    def eps_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        return model(x, t)[0]

    for sl in batches(len(entries), int(hparams["batch_size"])):
        chunk = entries[sl]
        images = np.array([i for i, _, _ in chunk])
        lams = torch.tensor([lam for _, lam, _ in chunk], dtype=problem.y.dtype)
        zetas = torch.tensor([zeta for _, _, zeta in chunk], dtype=problem.y.dtype)
        gens = image_generators([seeds[i] for i in images], device=ctx.device)
        callback: StepCallback | None = None if log is None else log.bind(images)
        start, recorded = time.perf_counter(), recording_seconds(log)
        out = diffpir_sample(eps_fn, problem.operator, y_pm[images], sigma_y, schedule, ts, lams, zetas, gens, True, callback, desc=f"diffpir {sl.start + len(chunk)}/{len(entries)}")
        x_hat[sl] = ((out + 1.0) / 2.0).clamp(0.0, 1.0).cpu().numpy()
        seconds[sl] = (time.perf_counter() - start - (recording_seconds(log) - recorded)) / len(chunk)
    return x_hat, seconds, nfe


def reconstruct(problem: Problem, hparams: dict, ctx: RunContext) -> Reconstruction:
    _check(hparams)
    entries = [(i, float(hparams["lam"]), float(hparams["zeta"])) for i in range(len(problem))]
    log = open_trajectory(problem, hparams, ctx, "diffpir")
    x_hat, seconds, nfe = _run(problem, entries, hparams, ctx, log)
    return Reconstruction(x_hat, np.full(len(problem), nfe), seconds, None if log is None else log.frame())


def _shared(candidate: dict) -> dict:
    return {k: v for k, v in candidate.items() if k not in PER_IMAGE}


def grid_entries(n: int, candidates: list[dict]) -> list[tuple[int, int]] | None:
    """(candidate, image) pairs in the order `reconstruct_grid` samples them, in batches of the
    first candidate's batch_size; None when the candidates differ in more than lam and zeta (then
    each one is reconstructed on its own). Tuning shards cut this list between batches."""
    base = _shared(candidates[0])
    if any(_shared(c) != base for c in candidates):
        return None
    return [(j, i) for j in range(len(candidates)) for i in range(n)]


def reconstruct_entries(problem: Problem, candidates: list[dict], entries: list[tuple[int, int]], ctx: RunContext) -> Reconstruction:
    """One reconstruction per (candidate, image) entry of `grid_entries`, batched as listed."""
    for c in candidates:
        _check(c)
    per_entry = [(i, float(candidates[j]["lam"]), float(candidates[j]["zeta"])) for j, i in entries]
    x_hat, seconds, nfe = _run(problem, per_entry, _shared(candidates[0]), ctx, None)
    return Reconstruction(x_hat, np.full(len(entries), nfe), seconds)


def reconstruct_grid(problem: Problem, candidates: list[dict], ctx: RunContext) -> list[Reconstruction]:
    """All candidates in one batched run when they differ only in lam and zeta (the usual grid)."""
    return batched_grid(sys.modules[__name__], problem, candidates, ctx)
