"""The epsilon-prediction DDPM prior shared by DPS and DDRM.

- `schedule`: the linear-beta DDPM schedule (and respacing for shorter ancestral samplers);
- `loss`: the DDPM "simple" loss the shared trainer uses for `--kind ddpm`;
- `pretrained`: the published networks of the paper's baselines, loaded strictly;
- `load_prior`: one entry point returning a `PriorModel` for either a diracbench weights file
  (a prior trained here) or a published checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from diracbench.errors import UserError
from diracbench.prior.schedule import DDPMSchedule, SpacedSchedule

__all__ = ["DDPMSchedule", "PriorModel", "SpacedSchedule", "load_prior", "PRIOR_FORMATS"]

PRIOR_FORMATS = ("diracbench", "sdedit", "adm-ffhq", "adm-imagenet")


class PriorModel(nn.Module):
    """eps(x_t, t) on [-1, 1] images with integer timesteps; optionally the learned-range
    variance channels v in [-1, 1] of ADM models (None for 3-channel epsilon models)."""

    def __init__(self, net: nn.Module, learned_variance: bool, description: str) -> None:
        super().__init__()
        self.net = net
        self.learned_variance = learned_variance
        self.description = description

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0]).to(torch.float32)
        out = self.net(x, t).to(x.dtype)
        if self.learned_variance:
            return out[:, :3], out[:, 3:]
        return out, None


def load_prior(path: str | Path, fmt: str, device: torch.device | str, image_size: int) -> PriorModel:
    """The prior network of `path` in eval mode with frozen weights.

    `fmt` is 'diracbench' (a prior trained by `train_prior`) or a published checkpoint's format
    (see `pretrained.PRETRAINED_FORMATS`). Anything that does not fit raises a UserError.
    """
    if fmt == "diracbench":
        from diracbench.nn.models import load_model

        net = load_model(path, "ddpm", device, image_size=image_size).requires_grad_(False)
        return PriorModel(net, learned_variance=False, description=f"diracbench DDPM prior {path}").eval()
    from diracbench.prior.pretrained import load_pretrained, pretrained_format

    spec = pretrained_format(fmt)
    if spec.image_size != image_size:
        raise UserError(f"the {fmt!r} checkpoint is a {spec.image_size}px model but the data here are {image_size}px; use a {spec.image_size}px dataset or train a prior")
    net = load_pretrained(path, fmt, device)
    return PriorModel(net, learned_variance=spec.learned_variance, description=f"{spec.description} from {path}").eval()
