"""Plumbing shared by the two diffusion baselines (DPS, DDRM): measurement range conversion,
the prior from the run context, batching with per-image seeds, and the per-step trajectory log.

Range conversion (baselines.md §0.1, §1.3): the shared measurement is y01 = A x01 + sigma_1 n.
Because A is linear, y = 2 y01 - A(1) = A x + 2 sigma_1 n with x = 2 x01 - 1: the diffusion
samplers see the same noise realisation as every other method, at std sigma_y = 2 sigma_1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from diracbench.errors import UserError
from diracbench.methods.base import TRAJECTORY_COLUMNS, Problem, RunContext
from diracbench.metrics.image_quality import data_consistency, psnr
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


class TrajectoryLog:
    """Per-step quality of the sampler's x0 estimate: t, NFE, data consistency, PSNR, LPIPS.

    `dc` = mean((y01 - A_1(clip(x0_01)))^2) in the [0, 1] range (compare with sigma_1^2), as the
    metrics stage defines it. Rows are logged on steps divisible by `every` and on the last one;
    LPIPS only on steps divisible by `lpips_every` (and the last), because it costs a VGG pass.
    """

    def __init__(self, problem: Problem, settings: TrajectorySettings, num_timesteps: int) -> None:
        self.problem = problem
        self.settings = settings
        self.T = num_timesteps
        self.rows: list[dict] = []
        self.seconds = 0.0  # time spent logging, which samplers leave out of their per-image time
        self._lpips = None
        if settings.lpips_every > 0:
            from diracbench.metrics.perceptual import LPIPSMetric

            self._lpips = LPIPSMetric(net=settings.lpips_net, upsample_below=settings.lpips_upsample_below, device=problem.y.device)

    def wants(self, step: int, last: bool) -> bool:
        return last or step % self.settings.every == 0

    @torch.no_grad()
    def log(self, step: int, last: bool, t_model: int, nfe: int, x0_pm: torch.Tensor, images: np.ndarray) -> None:
        """x0_pm: (b, C, H, W) estimates in [-1, 1] of the problem's images `images`."""
        if not self.wants(step, last):
            return
        start = time.perf_counter()
        idx = torch.as_tensor(images, device=x0_pm.device)
        x01 = ((x0_pm.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0)
        y01 = self.problem.y[idx]
        ref = self.problem.x[idx].clamp(0.0, 1.0)
        dc = data_consistency(y01, x01, self.problem.operator)
        psnr_values = psnr(x01, ref)
        lp = [math.nan] * len(images)
        if self._lpips is not None and (last or step % self.settings.lpips_every == 0):
            lp = self._lpips(x01, ref).tolist()
        for j, i in enumerate(images):
            self.rows.append({"image": int(i), "name": self.problem.names[int(i)], "step": step, "t": t_model / self.T, "nfe": nfe, "dc": float(dc[j]), "psnr": float(psnr_values[j]), "lpips": lp[j]})
        self.seconds += time.perf_counter() - start

    def frame(self) -> pd.DataFrame:
        table = pd.DataFrame(self.rows, columns=TRAJECTORY_COLUMNS)
        return table.sort_values(["image", "step"], kind="stable").reset_index(drop=True)
