"""The DDPM "simple" loss for the epsilon-prediction prior of DPS and DDRM (baselines.md §2.4).

`python -m diracbench.train --kind ddpm` imports `make_loss` and runs it inside the shared
training loop, so the prior gets exactly the trainer (resume, EMA, budget) of the Dirac models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from diracbench.prior.schedule import DDPMSchedule


def make_loss(loss_settings: dict, inputs: dict[str, Path], device: torch.device) -> Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]:
    """loss_fn(model, x0, generator): x0 (B, 3, H, W) in [0, 1] on `device`.

    Draws an integer t uniformly from {0, ..., T-1} and eps ~ N(0, I) from `generator`, forms
    x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps with x = 2 x0 - 1, and returns mean((eps_hat - eps)^2).
    """
    schedule = DDPMSchedule.from_settings(loss_settings)
    return _EpsilonLoss(schedule.alpha_bar_tensor(device).to(torch.float32), schedule.num_timesteps)


class _EpsilonLoss:
    """`loss(model, x0, generator)`, plus `draw`/`compute` for split batches (training.loop).

    The draws (t, then eps) cover the whole batch given to `draw`, so data-parallel ranks and
    micro-batches can share one global draw and each take its slice.
    """

    def __init__(self, abar: torch.Tensor, num_timesteps: int) -> None:
        self.abar, self.T = abar, num_timesteps

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        dev = generator.device
        t = torch.randint(0, self.T, (shape[0],), generator=generator, device=dev)
        eps = torch.randn(shape, generator=generator, device=dev, dtype=torch.float32)
        return t, eps

    def compute(self, model: nn.Module, x0: torch.Tensor, draws: tuple[torch.Tensor, ...]) -> torch.Tensor:
        t, eps = (d.to(x0.device) for d in draws)
        x = 2.0 * x0.to(torch.float32) - 1.0
        a = self.abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x + (1.0 - a).sqrt() * eps
        pred = model(x_t, t)
        return (pred.float() - eps).square().mean()

    def __call__(self, model: nn.Module, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.compute(model, x0, self.draw(tuple(x0.shape), generator))
