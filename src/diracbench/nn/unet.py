"""An NCSN++-style U-Net (the architecture family of EDM's SongUNet), written for diracbench.

Structure, following the hyper-parameters the official Dirac models use (dirac-method.md §5.5):
- noise conditioning: Fourier features of a scalar label (Dirac: sigma_t) or sinusoidal
  positional features (DDPM prior: the integer timestep), then two Linear+SiLU layers;
- encoder: a 3x3 input conv, then per resolution level `num_blocks` residual blocks (attention at
  `attn_resolutions`), a down-sampling residual block between levels, and the "residual"
  progressive-input branch (a strided conv from the image pyramid merged as (x + aux)/sqrt 2);
- decoder: two bottleneck blocks (the first with attention), per level `num_blocks + 1` blocks fed
  with concatenated skips, up-sampling residual blocks between levels, one output head;
- residual block: GroupNorm -> SiLU -> conv3x3 (with FIR up/down-sampling) -> + embedding bias ->
  GroupNorm -> SiLU -> dropout -> conv3x3 (initialised near zero) -> + skip, times sqrt(1/2).
With the paper's "base" settings at 256 px this has 67.7M parameters, the size the paper reports.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from diracbench.errors import UserError


@dataclass(frozen=True)
class UNetConfig:
    model_channels: int
    channel_mult: tuple[int, ...]
    num_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float
    channel_mult_emb: int = 4
    channel_mult_noise: int = 2
    fourier_scale: float = 16.0
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)
    encoder_type: str = "residual"

    @classmethod
    def from_dict(cls, cfg: dict) -> "UNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise UserError(f"unknown network keys {unknown}; known: {sorted(known)}")
        data = dict(cfg)
        for key in ("channel_mult", "attn_resolutions", "resample_filter"):
            if key in data:
                data[key] = tuple(int(v) for v in data[key])
        return cls(**data)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _xavier(module: nn.Module, gain: float = 1.0) -> nn.Module:
    nn.init.xavier_uniform_(module.weight, gain=gain)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """Up to 32 groups of at least 4 channels (EDM's rule), rounded down to a divisor of `channels`."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=eps)


class FIRResample(nn.Module):
    """Depthwise FIR up/down-sampling by 2 with a separable binomial filter.

    Always computed in float32, also under bf16 autocast: the CPU's depthwise (transposed)
    convolutions have no fast bf16 kernel, and in bf16 these four filters took about a third of a
    default training step (up 11-28 ms forward, down 5-12 ms backward, against under 1-6 ms in
    float32; README, Training recipe). float32 inputs give bit-identical outputs to computing
    in their own dtype; other dtypes get their own dtype back, rounded once.
    """

    def __init__(self, taps: tuple[int, ...], mode: str) -> None:
        super().__init__()
        f = torch.tensor(taps, dtype=torch.float32)
        f = torch.outer(f, f) / f.sum() ** 2
        self.register_buffer("filt", f, persistent=False)
        self.mode = mode
        self.pad = (len(taps) - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        # The meta device (the planner's counts) has no autocast to switch off.
        off = torch.autocast(device_type=x.device.type, enabled=False) if torch.amp.is_autocast_available(x.device.type) else contextlib.nullcontext()
        with off:
            xf = x.float()
            w = self.filt.float().expand(c, 1, *self.filt.shape)
            if self.mode == "down":
                y = F.conv2d(xf, w, groups=c, stride=2, padding=self.pad)
            else:
                y = F.conv_transpose2d(xf, w * 4, groups=c, stride=2, padding=self.pad)
        return y.to(x.dtype)


class FourierEmbedding(nn.Module):
    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).outer(2 * math.pi * self.freqs)
        return torch.cat([x.cos(), x.sin()], dim=1)


class PositionalEmbedding(nn.Module):
    def __init__(self, channels: int, max_positions: int = 10000) -> None:
        super().__init__()
        half = channels // 2
        freqs = (1.0 / max_positions) ** (torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).outer(self.freqs)
        return torch.cat([x.cos(), x.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        emb_channels: int,
        dropout: float,
        taps: tuple[int, ...],
        up: bool = False,
        down: bool = False,
        attention: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.resample = FIRResample(taps, "up" if up else "down") if (up or down) else None
        self.norm0 = group_norm(cin)
        self.conv0 = _xavier(nn.Conv2d(cin, cout, 3, padding=1))
        self.affine = _xavier(nn.Linear(emb_channels, cout))
        self.norm1 = group_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _xavier(nn.Conv2d(cout, cout, 3, padding=1), gain=1e-5)
        self.skip = _xavier(nn.Conv2d(cin, cout, 1)) if (cin != cout or up or down) else None
        if attention:
            self.norm2 = group_norm(cout)
            self.qkv = _xavier(nn.Conv2d(cout, 3 * cout, 1), gain=math.sqrt(0.2))
            self.proj = _xavier(nn.Conv2d(cout, cout, 1), gain=1e-5)
        self.attention = attention

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        h = F.silu(self.norm0(x))
        if self.resample is not None:
            h = self.resample(h)
            orig = self.resample(orig)
        h = self.conv0(h)
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None].to(h.dtype)))
        h = self.conv1(self.dropout(h))
        x = (h + (self.skip(orig) if self.skip is not None else orig)) * math.sqrt(0.5)
        if self.attention:
            b, c, hh, ww = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(b, 3, c, hh * ww).unbind(1)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            x = (self.proj(a.transpose(1, 2).reshape(b, c, hh, ww)) + x) * math.sqrt(0.5)
        return x


class UNet(nn.Module):
    """F(x, label): image-to-image network conditioned on one scalar per image."""

    def __init__(self, config: UNetConfig, image_size: int, embedding: str, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        cfg = config
        levels = len(cfg.channel_mult)
        if image_size % (1 << (levels - 1)) != 0:
            raise UserError(f"image_size {image_size} is not divisible by 2^{levels - 1}; use fewer channel_mult levels")
        self.config, self.image_size, self.embedding_kind = cfg, image_size, embedding
        emb_ch = cfg.model_channels * cfg.channel_mult_emb
        noise_ch = cfg.model_channels * cfg.channel_mult_noise
        if embedding == "fourier":
            self.map_noise: nn.Module = FourierEmbedding(noise_ch, cfg.fourier_scale)
        elif embedding == "positional":
            self.map_noise = PositionalEmbedding(noise_ch)
        else:
            raise ValueError(f"unknown embedding {embedding!r}")
        self.map0 = _xavier(nn.Linear(noise_ch, emb_ch))
        self.map1 = _xavier(nn.Linear(emb_ch, emb_ch))
        block = dict(emb_channels=emb_ch, dropout=cfg.dropout, taps=cfg.resample_filter)

        self.enc = nn.ModuleDict()
        self.aux = nn.ModuleDict()
        cout = in_channels
        caux = in_channels
        skips: list[int] = []
        for level, mult in enumerate(cfg.channel_mult):
            res = image_size >> level
            if level == 0:
                self.enc[f"{res}_conv"] = _xavier(nn.Conv2d(cout, cfg.model_channels, 3, padding=1))
                cout = cfg.model_channels
            else:
                self.enc[f"{res}_down"] = ResBlock(cout, cout, down=True, **block)
                if cfg.encoder_type == "residual":
                    self.aux[f"{res}_down"] = nn.Sequential(FIRResample(cfg.resample_filter, "down"), _xavier(nn.Conv2d(caux, cout, 3, padding=1)))
                    caux = cout
            skips.append(cout)
            for idx in range(cfg.num_blocks):
                cin, cout = cout, cfg.model_channels * mult
                self.enc[f"{res}_block{idx}"] = ResBlock(cin, cout, attention=res in cfg.attn_resolutions, **block)
                skips.append(cout)

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            res = image_size >> level
            if level == levels - 1:
                self.dec[f"{res}_in0"] = ResBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}_in1"] = ResBlock(cout, cout, **block)
            else:
                self.dec[f"{res}_up"] = ResBlock(cout, cout, up=True, **block)
            for idx in range(cfg.num_blocks + 1):
                cin, cout = cout + skips.pop(), cfg.model_channels * mult
                attn = idx == cfg.num_blocks and res in cfg.attn_resolutions
                self.dec[f"{res}_block{idx}"] = ResBlock(cin, cout, attention=attn, **block)
        self.out_norm = group_norm(cout)
        self.out_conv = _xavier(nn.Conv2d(cout, out_channels, 3, padding=1), gain=1e-5)
        # Activation checkpointing of the residual blocks (an execution setting, not part of the
        # weights): backward recomputes each block's forward instead of keeping its activations.
        self.checkpoint_blocks = False

    def _block(self, layer: nn.Module, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.checkpoint_blocks and torch.is_grad_enabled():
            # Non-reentrant: works under DDP and replays dropout's RNG (preserve_rng_state).
            return checkpoint(layer, x, emb, use_reentrant=False)
        return layer(x, emb)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.map1(F.silu(self.map0(self.map_noise(label.reshape(-1))))))
        skips = []
        aux = x
        for name, layer in self.enc.items():
            if name.endswith("_conv"):
                x = layer(x)
            else:
                x = self._block(layer, x, emb)
                if name.endswith("_down") and name in self.aux:
                    aux = self.aux[name](aux)
                    x = aux = (x + aux) * math.sqrt(0.5)
            skips.append(x)
        for layer in self.dec.values():
            if x.shape[1] != layer.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = self._block(layer, x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
