"""Model wrappers around the U-Net, and the weights file format.

- `DiracDenoiser`: residual clean-image prediction Phi(y_t, sigma_t) = y_t + F(y_t, sigma_t),
  conditioned on the raw noise std through Fourier features (as the official Dirac models).
- `EpsilonModel`: DDPM epsilon-prediction eps(x_t, t) with the integer timestep through
  sinusoidal features (the DDPM / guided-diffusion convention), for DPS and DDRM.

Weights files are plain dicts of tensors and builtins, loadable with `torch.load(weights_only=True)`,
and carry the architecture, so a checkpoint of the wrong kind, size or shape fails loudly on load
instead of silently running with random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from diracbench.errors import UserError
from diracbench.io import atomic_path
from diracbench.nn.unet import UNet, UNetConfig

WEIGHTS_FORMAT = "diracbench-weights-1"
KINDS = ("dirac", "ddpm")


class DiracDenoiser(nn.Module):
    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=y.device, dtype=torch.float32).reshape(-1).expand(y.shape[0])
        return y + self.net(y, sigma).to(y.dtype)


class EpsilonModel(nn.Module):
    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0]).to(torch.float32)
        return self.net(x, t).to(x.dtype)


def build_model(kind: str, network: dict, image_size: int) -> nn.Module:
    cfg = UNetConfig.from_dict(network)
    if kind == "dirac":
        return DiracDenoiser(UNet(cfg, image_size, embedding="fourier"))
    if kind == "ddpm":
        return EpsilonModel(UNet(cfg, image_size, embedding="positional"))
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")


def save_weights(path: str | Path, kind: str, network: dict, image_size: int, state_dict: dict, ema_state_dict: dict | None, meta: dict[str, Any]) -> None:
    record = {
        "format": WEIGHTS_FORMAT,
        "kind": kind,
        "network": UNetConfig.from_dict(network).to_dict(),
        "image_size": int(image_size),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "ema_state_dict": None if ema_state_dict is None else {k: v.detach().cpu() for k, v in ema_state_dict.items()},
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)


def read_weights(path: str | Path, kind: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; run the training rule that makes it (or point the config at a checkpoint)")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{path} is not a readable diracbench weights file ({err.__class__.__name__}); delete it and retrain, or check the path") from None
    if not isinstance(record, dict) or record.get("format") != WEIGHTS_FORMAT:
        raise UserError(f"{path} is not a diracbench weights file (format {record.get('format') if isinstance(record, dict) else type(record).__name__!r}); published checkpoints need the loader of their own method")
    if record["kind"] != kind:
        raise UserError(f"{path} holds a {record['kind']!r} model but a {kind!r} model is needed here; check which weights file the rule was given")
    return record


def load_model(path: str | Path, kind: str, device: torch.device | str = "cpu", use_ema: bool = True, image_size: int | None = None) -> nn.Module:
    """The model of a weights file in eval mode (EMA weights when present and `use_ema`)."""
    record = read_weights(path, kind)
    if image_size is not None and record["image_size"] != image_size:
        raise UserError(f"{path} was trained on {record['image_size']}px images but the data here are {image_size}px; retrain or fix the dataset's image_size")
    model = build_model(kind, record["network"], record["image_size"])
    state = record["ema_state_dict"] if (use_ema and record["ema_state_dict"] is not None) else record["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UserError(f"{path}: its weights do not fit the architecture it declares ({first}); the file is damaged or was edited") from None
    return model.to(device).eval()
