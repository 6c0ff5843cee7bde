"""The Dirac reverse process (paper Algorithm 1, dirac-method.md §6), batched, with one seeded
generator per image so that image i's result never depends on the rest of its batch.

Start from y_1 = y. For t = 1, 1 - dt, ... with t' = t - dt (an exact grid t_i = (N - i) / N):

    x0_hat = Phi(y_t, sigma_t)                                            (one NFE)
    D = (sigma_t^2 - sigma_t'^2) / sigma_t^2 * (A_t(x0_hat) - y_t)        (denoising / score step)
        + sign * (sigma_t^2 - sigma_t'^2) * c * grad_{y_t} ||y - A_1(x0_hat)||^2   (guidance, optional)
    R = A_t'(x0_hat) - A_t(x0_hat)                                        (incremental reconstruction)
    y_t' = y_t + R + D + sqrt(sigma_t^2 - sigma_t'^2) z

Guidance step sizes: std-scaled c = zeta / (2 sigma_1^2), error-scaled c = zeta / ||y - A_1(x0_hat)||
(per image). sign = -1 ("descent") follows from the derivation; the official code adds the
gradient (+1, "official"), which to first order increases the data-consistency error.

R estimators: look_ahead (above), small_look_ahead (dt/delta) (A_{t-delta} - A_t)(x0_hat),
look_back A_t(x0_hat) - A_{t+dt}(x0_hat) (look-ahead on the first step, where t + dt > 1).

Early stopping: the iteration whose t' falls below t_stop is the last; it returns x0_hat (default)
or the updated iterate y_t'. t_stop = 1 is the one-shot estimate Phi(y, sigma_1) (1 NFE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import nn

from diracbench.errors import UserError
from diracbench.metrics.recorder import StepCallback, StepRecord
from diracbench.operators import DegradationFamily, GeometricNoise
from diracbench.seeding import randn_per_image

ESTIMATORS = ("look_ahead", "small_look_ahead", "look_back")
GUIDANCE = ("none", "std", "error")
GUIDANCE_SIGNS = {"descent": -1.0, "official": 1.0}
OUTPUTS = ("x0_hat", "iterate")
_EPS = 1e-9


@dataclass(frozen=True)
class SamplerSettings:
    dt: float
    t_stop: float
    estimator: str
    delta: float | None
    guidance: str
    zeta: float
    guidance_sign: str
    output: str

    def __post_init__(self) -> None:
        if not 0 < self.dt <= 1:
            raise UserError(f"Dirac sampler dt must lie in (0, 1] (got {self.dt})")
        n = round(1.0 / self.dt)
        if abs(n * self.dt - 1.0) > 1e-6:
            raise UserError(f"Dirac sampler dt {self.dt} must divide 1 into a whole number of steps (e.g. 0.02, 0.05, 0.1)")
        if not 0 <= self.t_stop <= 1:
            raise UserError(f"Dirac t_stop must lie in [0, 1] (got {self.t_stop})")
        if self.estimator not in ESTIMATORS:
            raise UserError(f"unknown Dirac estimator {self.estimator!r}; use one of {list(ESTIMATORS)}")
        if self.estimator == "small_look_ahead" and (self.delta is None or not 0 < self.delta <= self.dt):
            raise UserError(f"estimator small_look_ahead needs 0 < delta <= dt (got delta {self.delta}, dt {self.dt})")
        if self.guidance not in GUIDANCE:
            raise UserError(f"unknown Dirac guidance {self.guidance!r}; use one of {list(GUIDANCE)}")
        if self.guidance_sign not in GUIDANCE_SIGNS:
            raise UserError(f"unknown guidance_sign {self.guidance_sign!r}; use one of {list(GUIDANCE_SIGNS)}")
        if self.output not in OUTPUTS:
            raise UserError(f"unknown Dirac output {self.output!r}; use one of {list(OUTPUTS)}")

    @classmethod
    def from_dict(cls, data: dict) -> "SamplerSettings":
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in data]
        if missing:
            raise UserError(f"Dirac sampler settings lack {missing}")
        return cls(
            dt=float(data["dt"]),
            t_stop=float(data["t_stop"]),
            estimator=str(data["estimator"]),
            delta=None if data["delta"] is None else float(data["delta"]),
            guidance=str(data["guidance"]),
            zeta=float(data["zeta"]),
            guidance_sign=str(data["guidance_sign"]),
            output=str(data["output"]),
        )

    @property
    def steps(self) -> int:
        return round(1.0 / self.dt)

    def t_at(self, step: int) -> float:
        n = self.steps
        return (n - step) / n

    def is_last(self, step: int) -> bool:
        return step == self.steps - 1 or self.t_at(step + 1) < self.t_stop - _EPS

    def nfe(self) -> int:
        """Network evaluations of one run (the step that stops, plus one)."""
        return next(i for i in range(self.steps) if self.is_last(i)) + 1


def _sigma(noise: GeometricNoise, t: float) -> float:
    return float(noise(t))


@torch.no_grad()
def _estimate_r(family: DegradationFamily, x0_hat: torch.Tensor, a_t: torch.Tensor, s: SamplerSettings, step: int) -> torch.Tensor:
    t, t_next = s.t_at(step), s.t_at(step + 1)
    if s.estimator == "small_look_ahead":
        return (s.dt / s.delta) * (family.apply(x0_hat, max(t - s.delta, 0.0)) - a_t)
    if s.estimator == "look_back" and step > 0:
        return a_t - family.apply(x0_hat, s.t_at(step - 1))
    return family.apply(x0_hat, t_next) - a_t


def dirac_sample(
    model: nn.Module,
    family: DegradationFamily,
    noise: GeometricNoise,
    y: torch.Tensor,
    generators: Sequence[torch.Generator],
    settings: SamplerSettings,
    on_step: StepCallback | None = None,
) -> tuple[torch.Tensor, int]:
    """Run the reverse process from the measurements `y` (B, C, H, W); returns (output, NFE).

    The step grid is the settings' (t = 1, 1 - dt, ...). `on_step(record)` sees every step:
    x0_hat and the iterate y_t' (None on a last step that returns x0_hat), both in [0, 1] units."""
    s = settings
    if len(generators) != y.shape[0]:
        raise ValueError(f"need one generator per image ({y.shape[0]}), got {len(generators)}")
    sign = GUIDANCE_SIGNS[s.guidance_sign]
    sigma_1 = _sigma(noise, 1.0)
    a_1 = family.at(1.0)
    y = y.float()
    y_t = y.clone()
    b = y.shape[0]
    # Without guidance nothing needs autograd: inference mode skips its bookkeeping. Guidance
    # differentiates through y_t, which inference-mode tensors could not take part in.
    no_grad = torch.inference_mode if s.guidance == "none" else torch.no_grad
    for i in range(s.steps):
        t, t_next = s.t_at(i), s.t_at(i + 1)
        s2, sn2 = _sigma(noise, t) ** 2, _sigma(noise, t_next) ** 2
        sig = torch.full((b,), math.sqrt(s2), device=y.device, dtype=torch.float32)
        last = s.is_last(i)
        returns_x0 = last and s.output == "x0_hat"
        # Guidance only changes the update; on a step that returns x0_hat it would be wasted work.
        guided = s.guidance != "none" and s2 > sn2 and not returns_x0
        if guided:
            with torch.enable_grad():
                y_in = y_t.detach().requires_grad_(True)
                x0_hat = model(y_in, sig).float()
                resid2 = (y - a_1(x0_hat)).pow(2).flatten(1).sum(1)
                (grad,) = torch.autograd.grad(resid2.sum(), y_in)  # images are independent: per-image gradients
            x0_hat = x0_hat.detach()
        else:
            with no_grad():
                x0_hat = model(y_t, sig).float()
        if returns_x0:
            if on_step is not None:
                on_step(StepRecord(i, t, i + 1, x0_hat, None, True))
            return x0_hat, i + 1
        with no_grad():
            a_t = family.apply(x0_hat, t)
            update = _estimate_r(family, x0_hat, a_t, s, i)
            if s2 > sn2:
                update = update + ((s2 - sn2) / s2) * (a_t - y_t)
                if guided:
                    if s.guidance == "std":
                        c = torch.full((b,), s.zeta * 0.5 / sigma_1**2, device=y.device)
                    else:
                        c = s.zeta / resid2.detach().sqrt().clamp_min(1e-12)
                    update = update + sign * (s2 - sn2) * c.view(-1, 1, 1, 1) * grad
                z = randn_per_image(tuple(y_t.shape), generators, device=y.device)
                update = update + math.sqrt(s2 - sn2) * z
            y_t = y_t + update
        if on_step is not None:
            on_step(StepRecord(i, t, i + 1, x0_hat, y_t, last))
        if last:
            return y_t, i + 1
    raise AssertionError("unreachable: the last step always returns")
