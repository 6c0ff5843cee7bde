"""The published epsilon-networks the paper's baselines used, rebuilt for strict loading.

Two architectures (baselines.md §2.2), written so that the official checkpoints' state dicts load
with `strict=True` (parameter names and shapes follow the original code exactly):

- `SimpleUNet`: the DDPM "simple" U-Net of DDPM/DDIM/SDEdit (models/diffusion.py `Model`), used by
  SDEdit's CelebA-HQ checkpoint `celeba_hq.ckpt` (3 output channels: epsilon only).
- `ADMUNet`: guided-diffusion's `UNetModel` (ADM), used by DPS's `ffhq_10m.pt` and OpenAI's
  `256x256_diffusion_uncond.pt` (6 output channels: epsilon + learned-range variance).

Only inference is implemented (no gradient checkpointing, no fp16 conversion, no class labels).
A checkpoint that does not fit fails with a UserError naming the mismatch; nothing is ever
left randomly initialised (the official DPS loader swallows such errors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diracbench.errors import UserError

# ----------------------------------------------------------------------------------------------
# DDPM "simple" U-Net (SDEdit / DDIM / DDRM models/diffusion.py)


def _ddpm_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(10000) / (half - 1)))
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _ddpm_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class _DDPMUpsample(nn.Module):
    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class _DDPMDownsample(nn.Module):
    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric padding, as the original
        return F.avg_pool2d(x, 2, 2)


class _DDPMResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float) -> None:
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.norm1 = _ddpm_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2 = _ddpm_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class _DDPMAttn(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _ddpm_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (m(hn).reshape(b, c, h * w).transpose(1, 2) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, as the original
        return x + self.proj_out(a.transpose(1, 2).reshape(b, c, h, w))


@dataclass(frozen=True)
class SimpleUNetConfig:
    ch: int
    out_ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float
    in_channels: int
    resolution: int
    resamp_with_conv: bool


class SimpleUNet(nn.Module):
    """DDPM's U-Net (`Model` in SDEdit/DDIM/DDRM models/diffusion.py): eps(x_t, t)."""

    def __init__(self, cfg: SimpleUNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, mult = cfg.ch, tuple(cfg.ch_mult)
        self.temb_ch = ch * 4
        self.num_resolutions = len(mult)
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, self.temb_ch), nn.Linear(self.temb_ch, self.temb_ch)])
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, 1, 1)
        res = cfg.resolution
        in_mult = (1,) + mult
        self.down = nn.ModuleList()
        block_in = ch
        for level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_mult[level], ch * mult[level]
            for _ in range(cfg.num_res_blocks):
                block.append(_DDPMResBlock(block_in, block_out, self.temb_ch, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    attn.append(_DDPMAttn(block_in))
            down = nn.Module()
            down.block, down.attn = block, attn
            if level != self.num_resolutions - 1:
                down.downsample = _DDPMDownsample(block_in, cfg.resamp_with_conv)
                res //= 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = _DDPMResBlock(block_in, block_in, self.temb_ch, cfg.dropout)
        self.mid.attn_1 = _DDPMAttn(block_in)
        self.mid.block_2 = _DDPMResBlock(block_in, block_in, self.temb_ch, cfg.dropout)
        ups: list[nn.Module] = []
        for level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = skip_in = ch * mult[level]
            for i in range(cfg.num_res_blocks + 1):
                if i == cfg.num_res_blocks:
                    skip_in = ch * in_mult[level]
                block.append(_DDPMResBlock(block_in + skip_in, block_out, self.temb_ch, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    attn.append(_DDPMAttn(block_in))
            up = nn.Module()
            up.block, up.attn = block, attn
            if level != 0:
                up.upsample = _DDPMUpsample(block_in, cfg.resamp_with_conv)
                res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = _ddpm_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](_ddpm_timestep_embedding(t, self.cfg.ch))))
        hs = [self.conv_in(x)]
        for level in range(self.num_resolutions):
            down = self.down[level]
            for i in range(self.cfg.num_res_blocks):
                h = down.block[i](hs[-1], temb)
                if len(down.attn) > 0:
                    h = down.attn[i](h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                hs.append(down.downsample(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)
        for level in reversed(range(self.num_resolutions)):
            up = self.up[level]
            for i in range(self.cfg.num_res_blocks + 1):
                h = up.block[i](torch.cat([h, hs.pop()], dim=1), temb)
                if len(up.attn) > 0:
                    h = up.attn[i](h)
            if level != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------------------------
# ADM U-Net (guided-diffusion unet.py UNetModel)


class _GroupNorm32(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _adm_norm(channels: int) -> nn.GroupNorm:
    return _GroupNorm32(32, channels)


def _adm_timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class _TimestepBlock(nn.Module):
    pass


class _TimestepSequential(nn.Sequential):
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, _TimestepBlock) else layer(x)
        return x


class _ADMUpsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class _ADMDownsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class _ADMResBlock(_TimestepBlock):
    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None, use_scale_shift_norm: bool = False, up: bool = False, down: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(_adm_norm(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = _ADMUpsample(channels, False), _ADMUpsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = _ADMDownsample(channels, False), _ADMDownsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels))
        self.out_layers = nn.Sequential(_adm_norm(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout), nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if self.out_channels == channels else nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class _ADMAttention(nn.Module):
    """AttentionBlock with the legacy head split (QKVAttentionLegacy), as the published models."""

    def __init__(self, channels: int, num_heads: int, num_head_channels: int) -> None:
        super().__init__()
        self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        self.norm = _adm_norm(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length = qkv.shape[-1]
        ch = c // self.num_heads
        q, k, v = qkv.reshape(b * self.num_heads, ch * 3, length).split(ch, dim=1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = self.proj_out(a.transpose(1, 2).reshape(b, -1, length))
        return (x + h).reshape(b, c, *spatial)


@dataclass(frozen=True)
class ADMConfig:
    image_size: int
    in_channels: int
    model_channels: int
    out_channels: int
    num_res_blocks: int
    attention_ds: tuple[int, ...]  # downsampling rates with attention (image_size // resolution)
    dropout: float
    channel_mult: tuple[int, ...]
    conv_resample: bool
    num_heads: int
    num_head_channels: int
    use_scale_shift_norm: bool
    resblock_updown: bool


class ADMUNet(nn.Module):
    """guided-diffusion's UNetModel (unconditional, fp32): output (B, out_channels, H, W)."""

    def __init__(self, cfg: ADMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        emb = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        res = dict(emb_channels=emb, dropout=cfg.dropout, use_scale_shift_norm=cfg.use_scale_shift_norm)
        attn = dict(num_heads=cfg.num_heads, num_head_channels=cfg.num_head_channels)
        ch = input_ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([_TimestepSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        chans = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [_ADMResBlock(ch, out_channels=int(mult * mc), **res)]
                ch = int(mult * mc)
                if ds in cfg.attention_ds:
                    layers.append(_ADMAttention(ch, **attn))
                self.input_blocks.append(_TimestepSequential(*layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = _ADMResBlock(ch, out_channels=ch, down=True, **res) if cfg.resblock_updown else _ADMDownsample(ch, cfg.conv_resample)
                self.input_blocks.append(_TimestepSequential(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = _TimestepSequential(_ADMResBlock(ch, **res), _ADMAttention(ch, **attn), _ADMResBlock(ch, **res))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [_ADMResBlock(ch + chans.pop(), out_channels=int(mc * mult), **res)]
                ch = int(mc * mult)
                if ds in cfg.attention_ds:
                    layers.append(_ADMAttention(ch, **attn))
                if level and i == cfg.num_res_blocks:
                    layers.append(_ADMResBlock(ch, out_channels=ch, up=True, **res) if cfg.resblock_updown else _ADMUpsample(ch, cfg.conv_resample))
                    ds //= 2
                self.output_blocks.append(_TimestepSequential(*layers))
        self.out = nn.Sequential(_adm_norm(ch), nn.SiLU(), nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(_adm_timestep_embedding(t, self.cfg.model_channels))
        hs = []
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


# ----------------------------------------------------------------------------------------------
# The published checkpoints


@dataclass(frozen=True)
class PretrainedFormat:
    name: str
    description: str
    architecture: str  # "ddpm-simple" or "adm"
    config: Any
    learned_variance: bool
    image_size: int
    parameters: int  # the count of the published architecture (tests check the rebuild against it)

    def build(self) -> nn.Module:
        return SimpleUNet(self.config) if self.architecture == "ddpm-simple" else ADMUNet(self.config)


_ADM_COMMON = dict(image_size=256, in_channels=3, out_channels=6, dropout=0.0, channel_mult=(1, 1, 2, 2, 4, 4), conv_resample=True, use_scale_shift_norm=True, resblock_updown=True)

PRETRAINED_FORMATS: dict[str, PretrainedFormat] = {
    "sdedit": PretrainedFormat(
        "sdedit",
        "SDEdit/DDPM CelebA-HQ 256 checkpoint celeba_hq.ckpt (DDPM 'simple' U-Net, ch 128, ch_mult 1,1,2,2,4,4, 2 res blocks, attention at 16 px)",
        "ddpm-simple",
        SimpleUNetConfig(ch=128, out_ch=3, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,), dropout=0.0, in_channels=3, resolution=256, resamp_with_conv=True),
        learned_variance=False,
        image_size=256,
        parameters=113_673_219,
    ),
    "adm-ffhq": PretrainedFormat(
        "adm-ffhq",
        "DPS FFHQ 256 checkpoint ffhq_10m.pt (ADM U-Net, 128 channels, 1 res block, attention at 16 px, learned variance)",
        "adm",
        ADMConfig(model_channels=128, num_res_blocks=1, attention_ds=(16,), num_heads=4, num_head_channels=64, **_ADM_COMMON),
        learned_variance=True,
        image_size=256,
        parameters=93_563_910,
    ),
    "adm-imagenet": PretrainedFormat(
        "adm-imagenet",
        "guided-diffusion ImageNet 256x256_diffusion_uncond.pt (ADM U-Net, 256 channels, 2 res blocks, attention at 32/16/8 px, learned variance)",
        "adm",
        ADMConfig(model_channels=256, num_res_blocks=2, attention_ds=(8, 16, 32), num_heads=4, num_head_channels=64, **_ADM_COMMON),
        learned_variance=True,
        image_size=256,
        parameters=552_814_086,
    ),
}


def pretrained_format(name: str) -> PretrainedFormat:
    if name not in PRETRAINED_FORMATS:
        raise UserError(f"unknown pretrained checkpoint format {name!r}; use one of {sorted(PRETRAINED_FORMATS)}")
    return PRETRAINED_FORMATS[name]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a published checkpoint (tensors only: weights_only loading)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pretrained checkpoint {path} does not exist; download it (baselines.md §2.2 says where) or fix prior.pretrained in the config")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{path} is not a readable torch checkpoint ({err.__class__.__name__}: {str(err).splitlines()[0][:160]})") from None
    if isinstance(obj, dict) and obj.get("format") == "diracbench-weights-1":
        raise UserError(f"{path} is a diracbench weights file, not a published checkpoint; use format 'diracbench' for it")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a state dict of tensors; is it really a published diffusion checkpoint?")
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):  # saved from a DataParallel wrapper
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_pretrained(path: str | Path, fmt: str, device: torch.device | str = "cpu") -> nn.Module:
    """The network of a published checkpoint in eval mode, loaded strictly."""
    spec = pretrained_format(fmt)
    state = read_state_dict(path)
    with torch.device("meta"):  # no memory for weights that the checkpoint replaces anyway
        model = spec.build()
    problems = _state_mismatch(model, state)
    if problems:
        raise UserError(f"{path} does not fit format {fmt!r} ({spec.description}): {problems}; check prior.pretrained's format for this file")
    model.load_state_dict(state, strict=True, assign=True)
    return model.float().to(device).eval().requires_grad_(False)


def _state_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: checkpoint {got[k]} vs model {want[k]})")
    return "; ".join(parts)
