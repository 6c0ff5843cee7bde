"""The incremental-reconstruction loss (paper eq. 14), batched over the whole batch.

    L = E_{t ~ U[0,1], x0, z} (1 / sigma_t^2) || A_tau(Phi(y_t, sigma_t)) - A_tau(x0) ||^2,
    y_t = A_t(x0) + sigma_t z,   tau = max(t - dt, 0)

with one t per image, the squared norm summed over pixels and averaged over the batch
(dirac-method.md §5.2). dt = 0 is the plain denoising score-matching loss (eq. 12); dt = 1 puts
the loss in (almost) clean-image space (tau = 0, where the blur family still applies its small
residual blur A_0 — the paper's form; `clean_space_at_tau0` compares with x0 itself where tau = 0,
as the official "weighted_mse_x_loss" does).

Every image carries its own severity: the blur family builds all per-image blur matrices in one
einsum, the mask family all masks at once — no Python loop over samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from diracbench.dirac import scheduled_family
from diracbench.errors import UserError
from diracbench.operators import DegradationFamily, GeometricNoise, load_operator_spec

LOSS_KEYS = ("dt", "clean_space_at_tau0")


def ir_draw(shape: tuple[int, ...], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss's random draws for a batch of `shape`: one t per image, then z, in this order.

    Kept apart from the arithmetic so that data-parallel ranks and micro-batches can draw the whole
    global batch (identical on every rank) and each use its own slice: the draws then do not depend
    on how the batch is split.
    """
    dev = generator.device
    t = torch.rand(shape[0], generator=generator, device=dev, dtype=torch.float32).to(torch.float64)
    z = torch.randn(shape, generator=generator, device=dev, dtype=torch.float32)
    return t, z


def ir_loss_from_draws(
    model: nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    z: torch.Tensor,
    family: DegradationFamily,
    noise: GeometricNoise,
    dt: float,
    clean_space_at_tau0: bool = False,
) -> torch.Tensor:
    """The loss (mean over the images of `x0`) for given draws `t`, `z` of those images."""
    z = z.to(x0.device)
    sigma = noise(t).to(x0.device)
    tau = (t - dt).clamp_min(0.0)
    x0 = x0.float()
    # The operators run in float32 even under bf16 autocast: only the network may lose precision.
    with torch.autocast(device_type=x0.device.type, enabled=False):
        y_t = family.apply(x0, t) + sigma.float().view(-1, 1, 1, 1) * z
    x0_hat = model(y_t, sigma.float())
    with torch.autocast(device_type=x0.device.type, enabled=False):
        err = x0_hat.float() - x0
        err_tau = family.apply(err, tau)  # A_tau is linear: A_tau(Phi) - A_tau(x0) = A_tau(Phi - x0)
        if clean_space_at_tau0:
            err_tau = torch.where((tau == 0).view(-1, 1, 1, 1).to(err.device), err, err_tau)
        per_image = err_tau.pow(2).flatten(1).sum(1) / sigma.float().pow(2)
    return per_image.mean()


def ir_loss(
    model: nn.Module,
    x0: torch.Tensor,
    generator: torch.Generator,
    family: DegradationFamily,
    noise: GeometricNoise,
    dt: float,
    clean_space_at_tau0: bool = False,
) -> torch.Tensor:
    """One minibatch of the incremental-reconstruction loss; t and z are drawn from `generator`."""
    t, z = ir_draw(tuple(x0.shape), generator)
    return ir_loss_from_draws(model, x0, t, z, family, noise, dt, clean_space_at_tau0)


class _IRLoss:
    """`loss(model, x0, generator)`, plus `draw`/`compute` for split batches (training.loop)."""

    def __init__(self, family: DegradationFamily, noise: GeometricNoise, dt: float, clean: bool) -> None:
        self.family, self.noise, self.dt, self.clean = family, noise, dt, clean

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        return ir_draw(shape, generator)

    def compute(self, model: nn.Module, x0: torch.Tensor, draws: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return ir_loss_from_draws(model, x0, *draws, self.family, self.noise, self.dt, self.clean)

    def __call__(self, model: nn.Module, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.compute(model, x0, self.draw(tuple(x0.shape), generator))


def make_loss(loss_settings: dict, inputs: dict[str, Path], device: torch.device) -> Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]:
    """The loss callable of `python -m diracbench.train --kind dirac` (inputs: operator, schedule)."""
    missing = [k for k in LOSS_KEYS if k not in loss_settings]
    if missing:
        raise UserError(f"Dirac loss settings lack {missing}; the train_dirac rule passes dirac.loss and the model's dt")
    unknown = sorted(set(loss_settings) - set(LOSS_KEYS))
    if unknown:
        raise UserError(f"unknown Dirac loss settings {unknown}; known: {list(LOSS_KEYS)}")
    for name in ("operator", "schedule"):
        if name not in inputs:
            raise UserError(f"train --kind dirac needs --input {name}=PATH (operator.json and schedule.csv)")
    dt = float(loss_settings["dt"])
    if not 0.0 <= dt <= 1.0:
        raise UserError(f"Dirac look-ahead dt must lie in [0, 1] (got {dt})")
    spec = load_operator_spec(inputs["operator"])
    family = scheduled_family(spec, inputs["schedule"], device=device)
    noise = GeometricNoise.from_dict(spec["noise"])
    clean = bool(loss_settings["clean_space_at_tau0"])

    return _IRLoss(family, noise, dt, clean)
