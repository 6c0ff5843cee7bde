"""The U-Net's FIR resampling runs in float32 even under bf16 autocast (a training-speed change).

What it changes, as the issue asks a speed change to document: float32 results are bit-identical
to computing the filters in the input's dtype (sampling, DPS, DDRM, the presets' fp32 models);
bf16-autocast training gets the filters unrounded, so a tiny bf16 run trains nearby but
different weights, and a tiny fp32 run is bit-identical.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import diracbench.nn.unet as unet
from diracbench.nn.models import build_model
from diracbench.training.loop import TrainSettings, train

NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [8], "dropout": 0.0}
IMAGES = (np.random.default_rng(0).random((24, 3, 16, 16)) * 255).astype(np.uint8)
SETTINGS = TrainSettings(steps=8, batch_size=6, lr=1e-3, ema_decay=None, grad_clip=1.0, checkpoint_every=4, log_every=2, seed=3, bf16=True, channels_last=False)
CPU = torch.device("cpu")


def in_own_dtype(self: unet.FIRResample, x: torch.Tensor) -> torch.Tensor:
    """The previous forward: the filters in x's dtype (bf16 under autocast)."""
    c = x.shape[1]
    w = self.filt.to(x.dtype).expand(c, 1, *self.filt.shape)
    if self.mode == "down":
        return F.conv2d(x, w, groups=c, stride=2, padding=self.pad)
    return F.conv_transpose2d(x, w * 4, groups=c, stride=2, padding=self.pad)


def exact(x: torch.Tensor, taps: tuple[int, ...], mode: str) -> torch.Tensor:
    """The separable binomial filter in float64, as a plain (non-transposed) computation."""
    f = torch.tensor(taps, dtype=torch.float64)
    f = f / f.sum()
    pad = (len(taps) - 1) // 2
    x = x.double()
    if mode == "down":
        xp = F.pad(x, (pad, pad, pad, pad))
        n_out = (x.shape[-1] + 2 * pad - len(taps)) // 2 + 1
        out = torch.zeros(*x.shape[:2], n_out, n_out, dtype=torch.float64)
        for i in range(len(taps)):
            for j in range(len(taps)):
                out += f[i] * f[j] * xp[..., i : i + 2 * n_out - 1 : 2, j : j + 2 * n_out - 1 : 2]
        return out
    # Transposed: input pixel m feeds output 2m + t - pad with weight 2 f[t] per axis.
    n = x.shape[-1]
    n_out = (n - 1) * 2 - 2 * pad + len(taps)
    out = torch.zeros(*x.shape[:2], n_out + 2 * len(taps), n_out + 2 * len(taps), dtype=torch.float64)
    for i in range(len(taps)):
        for j in range(len(taps)):
            rows, cols = slice(len(taps) + i - pad, len(taps) + i - pad + 2 * n - 1, 2), slice(len(taps) + j - pad, len(taps) + j - pad + 2 * n - 1, 2)
            out[..., rows, cols] += 4 * f[i] * f[j] * x
    return out[..., len(taps) : len(taps) + n_out, len(taps) : len(taps) + n_out]


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 1)])
@pytest.mark.parametrize("mode", ["up", "down"])
def test_float32_resampling_is_the_filter_and_unchanged(taps, mode):
    x = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(1))
    layer = unet.FIRResample(taps, mode)
    y = layer(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, in_own_dtype(layer, x))  # float32: bit-identical to before
    assert torch.allclose(y.double(), exact(x, taps, mode), atol=1e-6)


@pytest.mark.parametrize("mode", ["up", "down"])
def test_under_bf16_autocast_the_filter_runs_in_float32(mode):
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    layer = unet.FIRResample((1, 3, 3, 1), mode)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        from_fp32 = layer(x)  # the U-Net's h path: group norm + SiLU leave float32
        from_bf16 = layer(x.bfloat16())  # its skip path: a block output, bf16 under autocast
        before = in_own_dtype(layer, x)  # autocast ran the old filter in bf16
    assert from_fp32.dtype == torch.float32 and torch.equal(from_fp32, layer(x))
    assert from_bf16.dtype == torch.bfloat16
    assert torch.equal(from_bf16, layer(x.bfloat16().float()).bfloat16())  # one rounding, at the end
    assert before.dtype == torch.bfloat16
    # The old path differs by bf16 rounding of its input and output (8 significant bits).
    err = (before.float() - from_fp32).abs().max() / from_fp32.abs().max()
    assert 0 < err < 2**-6


def _train(tmp_path, cpu_bf16: bool):
    torch.manual_seed(0)
    model = build_model("dirac", NET, 16)

    def loss(m, x0, gen):
        sigma = 0.01 + 0.04 * torch.rand(x0.shape[0], generator=gen)
        y = x0 + sigma[:, None, None, None] * torch.randn(x0.shape, generator=gen)
        return (m(y, sigma) - x0).square().flatten(1).sum(1).mean()

    return train(model, loss, IMAGES, TrainSettings(**{**SETTINGS.__dict__, "cpu_bf16": cpu_bf16}), tmp_path, CPU)


def test_tiny_run_fp32_is_bit_identical_and_bf16_stays_close(tmp_path, monkeypatch):
    now = {bf: _train(tmp_path / f"now{bf}", bf) for bf in (False, True)}
    monkeypatch.setattr(unet.FIRResample, "forward", in_own_dtype)
    before = {bf: _train(tmp_path / f"before{bf}", bf) for bf in (False, True)}
    for key, value in now[False].state_dict.items():
        assert torch.equal(value, before[False].state_dict[key]), key
    diffs = [float((now[True].state_dict[k] - before[True].state_dict[k]).abs().max()) for k in now[True].state_dict if now[True].state_dict[k].is_floating_point()]
    # Eight bf16 steps at lr 1e-3: the weights move apart by rounding only, not by training.
    assert 0 < max(diffs) < 5e-3
    losses = [(a["loss"], b["loss"]) for a, b in zip(now[True].log, before[True].log)]
    assert losses and all(abs(a - b) <= 0.02 * abs(b) for a, b in losses)
