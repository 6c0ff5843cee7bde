"""The DDPM noise schedule shared by the prior's training loss, DPS and DDRM (baselines.md §2.1).

Linear betas from `beta_start` to `beta_end` over T steps, 0-based t (t = 0 is the first noising
step), everything computed in float64 and cast where used. The convention alpha_bar(-1) = 1 lets
samplers step to "t = -1" (the clean image) without special cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from diracbench.errors import UserError

SCHEDULE_KEYS = ("beta_start", "beta_end", "num_timesteps")


@dataclass(frozen=True)
class DDPMSchedule:
    beta_start: float
    beta_end: float
    num_timesteps: int

    def __post_init__(self) -> None:
        if not (0 < self.beta_start <= self.beta_end < 1):
            raise UserError(f"prior schedule: need 0 < beta_start ({self.beta_start}) <= beta_end ({self.beta_end}) < 1")
        if self.num_timesteps < 2:
            raise UserError(f"prior schedule: num_timesteps must be at least 2 (got {self.num_timesteps})")

    @classmethod
    def from_settings(cls, settings: dict) -> "DDPMSchedule":
        missing = [k for k in SCHEDULE_KEYS if k not in settings]
        if missing:
            raise UserError(f"prior schedule settings lack {missing}; the rule passes config 'prior' keys {list(SCHEDULE_KEYS)}")
        return cls(float(settings["beta_start"]), float(settings["beta_end"]), int(settings["num_timesteps"]))

    def to_dict(self) -> dict:
        return {"beta_start": self.beta_start, "beta_end": self.beta_end, "num_timesteps": self.num_timesteps}

    @property
    def betas(self) -> np.ndarray:
        return np.linspace(self.beta_start, self.beta_end, self.num_timesteps, dtype=np.float64)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t with alpha_bar_{-1} = 1."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def ve_sigma(self, t: int) -> float:
        """sqrt((1 - alpha_bar_t) / alpha_bar_t): the noise level of x_t / sqrt(alpha_bar_t) (DDRM)."""
        ab = self.alpha_bar(t)
        return float(np.sqrt((1.0 - ab) / ab))

    def alpha_bar_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.as_tensor(self.alphas_cumprod, dtype=torch.float64, device=device)

    def spaced(self, steps: int) -> "SpacedSchedule":
        return SpacedSchedule.evenly(self, steps)


@dataclass(frozen=True)
class SpacedSchedule:
    """An ancestral-sampling schedule on a subset of the timesteps (guided-diffusion's respacing).

    `timesteps[k]` is the original t given to the network at sampler step k (increasing in k);
    the betas of the subset are 1 - alpha_bar[t_k] / alpha_bar[t_{k-1}], so the marginals of
    the kept steps are unchanged. With all T steps this is the plain DDPM schedule.
    """

    timesteps: tuple[int, ...]
    alphas_cumprod: np.ndarray  # (K,) at the kept steps
    betas: np.ndarray  # (K,)
    num_timesteps: int  # T of the base schedule (timesteps are out of range(T))

    @classmethod
    def evenly(cls, base: DDPMSchedule, steps: int) -> "SpacedSchedule":
        T = base.num_timesteps
        if not 1 <= steps <= T:
            raise UserError(f"sampler steps must be between 1 and the prior's num_timesteps {T} (got {steps})")
        # guided-diffusion's space_timesteps(T, str(steps)): a fractional stride that keeps t = 0 and t = T-1.
        frac = (T - 1) / (steps - 1) if steps > 1 else 1.0
        kept = sorted({round(i * frac) for i in range(steps)}) if steps > 1 else [T - 1]
        return cls.from_timesteps(base, kept)

    @classmethod
    def from_timesteps(cls, base: DDPMSchedule, kept: Sequence[int]) -> "SpacedSchedule":
        ab_all = base.alphas_cumprod
        ab = ab_all[np.asarray(kept, dtype=np.int64)]
        prev = np.concatenate([[1.0], ab[:-1]])
        return cls(tuple(int(t) for t in kept), ab, 1.0 - ab / prev, base.num_timesteps)

    def __len__(self) -> int:
        return len(self.timesteps)

    @property
    def alphas_cumprod_prev(self) -> np.ndarray:
        return np.concatenate([[1.0], self.alphas_cumprod[:-1]])

    @property
    def posterior_variance(self) -> np.ndarray:
        """beta-tilde_k = beta_k (1 - alpha_bar_{k-1}) / (1 - alpha_bar_k); zero at k = 0."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        pv = self.posterior_variance
        if len(pv) == 1:
            return np.log(np.maximum(self.betas, 1e-20))
        return np.log(np.concatenate([[pv[1]], pv[1:]]))

    @property
    def posterior_mean_coefs(self) -> tuple[np.ndarray, np.ndarray]:
        """(c1, c2) with mean = c1 x0 + c2 x_t."""
        ab, ab_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        c1 = self.betas * np.sqrt(ab_prev) / (1.0 - ab)
        c2 = (1.0 - ab_prev) * np.sqrt(1.0 - self.betas) / (1.0 - ab)
        return c1, c2

    def log_variance(self, kind: str) -> np.ndarray:
        """Fixed log-variances: 'fixedsmall' (beta-tilde, clipped) or 'fixedlarge' (beta)."""
        if kind == "fixedsmall":
            return self.posterior_log_variance_clipped
        if kind == "fixedlarge":
            pv = self.posterior_variance
            first = pv[1] if len(pv) > 1 else self.betas[0]
            return np.log(np.concatenate([[first], self.betas[1:]]))
        raise ValueError(f"unknown fixed variance {kind!r}")

    def learned_range_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(min_log, max_log) of the learned-range interpolation (ADM models with 6 output channels)."""
        return self.posterior_log_variance_clipped, np.log(self.betas)
