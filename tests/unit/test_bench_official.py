"""The official-style loops of the bench compute what the batched code computes (apples to apples)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diracbench.bench.official import (
    batched_operators,
    official_apply,
    official_blur_kernel,
    official_mask,
    official_style_loss,
    official_style_operators,
    official_style_sample,
)
from diracbench.dirac.loss import ir_loss
from diracbench.dirac.sampler import SamplerSettings, dirac_sample
from diracbench.nn.models import build_model
from diracbench.operators import GeometricNoise, LinearSchedule, TableSchedule
from diracbench.operators.blur import GaussianBlurFamily, gaussian_taps
from diracbench.operators.inpaint import SmoothMaskFamily, smooth_masks
from diracbench.seeding import image_generators

NOISE = GeometricNoise(0.01, 0.05)
TINY_NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def blur_family():
    return GaussianBlurFamily((16, 16), 9, TableSchedule.from_rows([0, 0.5, 1], [0.3, 0.8, 2.0]))


def mask_family():
    return SmoothMaskFamily((16, 16), LinearSchedule(0.1, 4.0), 4.0)


def perturbed_model(seed=0):
    torch.manual_seed(seed)
    model = build_model("dirac", TINY_NET, 16).eval()
    with torch.no_grad():  # away from the near-identity initialisation, so the network matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def images(n=4, seed=0):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("std", [0.3, 0.8, 1.2, 2.0])
def test_scipy_kernel_is_the_outer_product_of_the_taps(std):
    # 2.0 has a 6-std support (radius 12) wider than the 9-tap window: the renormalised case.
    taps = gaussian_taps(torch.tensor([std]), 9)[0].numpy()
    # scipy's filter agrees to ~1e-8, far below the float32 rounding of the convolution.
    np.testing.assert_allclose(official_blur_kernel(std, 9), np.outer(taps, taps), rtol=0, atol=1e-7)


@pytest.mark.parametrize("std", [0.0, 0.1, 1.0, 3.3, 6.25])
def test_canvas_mask_equals_the_closed_form(std):
    closed = smooth_masks(torch.tensor([std]), (32, 32), 4.0, (16, 16))[0, 0].numpy()
    np.testing.assert_allclose(official_mask(std, (32, 32), 4.0, (16, 16)), closed, rtol=0, atol=1e-7)


@pytest.mark.parametrize("family_fn", [blur_family, mask_family], ids=["blur", "mask"])
@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_operator_rebuilt_per_call_equals_the_cached_batched_one(family_fn, t):
    fam, x = family_fn(), images(3)
    got = torch.cat([official_apply(fam, x[i : i + 1], t) for i in range(3)])
    torch.testing.assert_close(got, fam.apply(x, t), rtol=0, atol=2e-6)


SAMPLER_CASES = [
    dict(),
    dict(t_stop=0.5),
    dict(estimator="look_back", output="iterate"),
    dict(estimator="small_look_ahead", delta=0.1),
    dict(guidance="std", zeta=0.5),
    dict(guidance="error", zeta=1.0, output="iterate"),
]


@pytest.mark.parametrize("family_fn", [blur_family, mask_family], ids=["blur", "mask"])
@pytest.mark.parametrize("kw", SAMPLER_CASES, ids=["look_ahead", "early_stop", "look_back", "small_look_ahead", "std_guidance", "error_guidance"])
def test_one_image_loop_gives_the_batched_samples(family_fn, kw):
    fam, model, y = family_fn(), perturbed_model(), images(4, seed=1)
    settings = SamplerSettings(**{**dict(dt=0.2, t_stop=0.0, estimator="look_ahead", delta=None, guidance="none", zeta=0.0, guidance_sign="descent", output="x0_hat"), **kw})
    seeds = [11, 12, 13, 14]
    batched, nfe = dirac_sample(model, fam, NOISE, y, image_generators(seeds), settings)
    loop, loop_nfe = official_style_sample(model, fam, NOISE, y, image_generators(seeds), settings)
    assert loop_nfe == nfe == settings.nfe()
    torch.testing.assert_close(loop, batched, rtol=0, atol=2e-5)
    # The comparison has teeth: the loop's samples depend on the seeds as the batched ones do.
    other, _ = official_style_sample(model, fam, NOISE, y, image_generators([s + 1 for s in seeds]), settings)
    assert not torch.allclose(other, batched, atol=1e-4)


@pytest.mark.parametrize("family_fn", [blur_family, mask_family], ids=["blur", "mask"])
@pytest.mark.parametrize(("dt", "clean"), [(0.0, False), (0.3, False), (1.0, False), (1.0, True)])
def test_per_sample_loss_equals_the_batched_loss_and_its_gradient(family_fn, dt, clean):
    fam, x0 = family_fn(), images(6, seed=2)
    grads, values = [], []
    for fn in (official_style_loss, ir_loss):
        model = perturbed_model(seed=3).train()
        loss = fn(model, x0, torch.Generator().manual_seed(5), fam, NOISE, dt, clean)
        loss.backward()
        values.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4 * float(grads[1].abs().max()))


@pytest.mark.parametrize("family_fn", [blur_family, mask_family], ids=["blur", "mask"])
def test_operator_work_of_the_loss_matches(family_fn):
    fam, x0 = family_fn(), images(5, seed=4)
    t = torch.rand(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tau = (t - 0.4).clamp_min(0.0)
    torch.testing.assert_close(official_style_operators(fam, x0, t, tau), batched_operators(fam, x0, t, tau), rtol=0, atol=5e-6)


@pytest.mark.parametrize("family_fn", [blur_family, mask_family], ids=["blur", "mask"])
def test_official_style_operator_is_a_whole_linear_operator(family_fn):
    from diracbench.bench.official import OfficialStyleFamily

    fam = family_fn()
    op = OfficialStyleFamily(fam).at(0.6)
    x, y = images(2, seed=3), images(2, seed=4)
    # forward rebuilt per call equals the cached operator; adjoint and SVD are its exact ones
    assert torch.allclose(op.forward(x), fam.at(0.6).forward(x), atol=1e-5)
    assert torch.allclose((op.forward(x) * y).sum(), (x * op.adjoint(y)).sum(), rtol=1e-4)
    assert torch.allclose(op.svd().apply(x), fam.at(0.6).forward(x), atol=1e-4)
