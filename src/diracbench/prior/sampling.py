"""Plumbing shared by the diffusion baselines (DPS, DDRM, DiffPIR): measurement range conversion,
the prior from the run context, batching with per-image seeds, and their trajectory settings
(the log itself is the harness's recorder, metrics/recorder.py).

Range conversion (baselines.md §0.1, §1.3): the shared measurement is y01 = A x01 + sigma_1 n.
Because A is linear, y = 2 y01 - A(1) = A x + 2 sigma_1 n with x = 2 x01 - 1: the diffusion
samplers see the same noise realisation as every other method, at std sigma_y = 2 sigma_1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from diracbench.errors import UserError
from diracbench.methods.base import Problem, RunContext, recorder_for
from diracbench.metrics.recorder import StepRecord, Trajectory
from diracbench.prior import PRIOR_FORMATS, PriorModel, load_prior
from diracbench.prior.schedule import DDPMSchedule


def measurement_pm(problem: Problem) -> tuple[torch.Tensor, float]:
    """(y in the [-1, 1] convention, its noise std sigma_y = 2 sigma_1)."""
    a_one = problem.operator.response_to_ones(problem.y)
    return 2.0 * problem.y - a_one, 2.0 * float(problem.sigma_1)


def prior_settings(hparams: dict) -> dict:
    prior = hparams.get("prior")
    if not isinstance(prior, dict) or "format" not in prior:
        raise UserError("the method's settings lack hparams.prior {format, beta_start, beta_end, num_timesteps}; the rule passes them from the config's 'prior' section")
    if prior["format"] not in PRIOR_FORMATS:
        raise UserError(f"hparams.prior.format {prior['format']!r} is unknown; use one of {list(PRIOR_FORMATS)}")
    return prior


def prior_from_context(problem: Problem, hparams: dict, ctx: RunContext) -> tuple[PriorModel, DDPMSchedule]:
    prior = prior_settings(hparams)
    schedule = DDPMSchedule.from_settings(prior)
    path, size = ctx.input("prior"), int(problem.y.shape[-1])
    model = ctx.cached(("prior", str(path), prior["format"], size), lambda: load_prior(path, prior["format"], ctx.device, image_size=size))
    return model, schedule


def require(hparams: dict, keys: tuple[str, ...], method: str) -> None:
    missing = [k for k in keys if k not in hparams]
    if missing:
        raise UserError(f"{method}: hparams lack {missing}; set them in the config's '{method}' section")


def batches(n: int, batch_size: int) -> Iterator[slice]:
    size = max(1, int(batch_size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@dataclass
class TrajectorySettings:
    every: int
    lpips_every: int  # 0 disables LPIPS along the trajectory
    lpips_net: str
    lpips_upsample_below: int

    @classmethod
    def from_hparams(cls, hparams: dict, method: str) -> "TrajectorySettings | None":
        tr = hparams.get("trajectory")
        if tr is None:
            return None
        for key in ("every", "lpips_every", "lpips"):
            if key not in tr:
                raise UserError(f"{method}: hparams.trajectory lacks {key!r}")
        if int(tr["every"]) < 1:
            raise UserError(f"{method}: trajectory.every must be at least 1")
        return cls(int(tr["every"]), int(tr["lpips_every"]), str(tr["lpips"]["net"]), int(tr["lpips"]["upsample_below"]))


def open_trajectory(problem: Problem, hparams: dict, ctx: RunContext, method: str) -> Trajectory | None:
    """The trajectory log of one run: None unless the settings ask for one and the harness passed a
    recorder. Malformed settings are an error either way."""
    settings = TrajectorySettings.from_hparams(hparams, method)
    recorder = recorder_for(problem, ctx)
    if settings is None or recorder is None:
        return None
    return recorder.trajectory(every=settings.every, lpips_every=settings.lpips_every, lpips={"net": settings.lpips_net, "upsample_below": settings.lpips_upsample_below})


def record(step: int, t_model: int, num_timesteps: int, nfe: int, x0_pm: torch.Tensor, iterate_pm: torch.Tensor | None, last: bool) -> StepRecord:
    """A DDPM sampler's step in the recorder's terms: t = t_model / T, images from [-1, 1] to [0, 1]."""
    return StepRecord(step, t_model / num_timesteps, nfe, (x0_pm.detach() + 1.0) / 2.0, None if iterate_pm is None else (iterate_pm.detach() + 1.0) / 2.0, last)
