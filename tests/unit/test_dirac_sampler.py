"""Dirac reverse process (Algorithm 1): update rule, early stopping, estimators, guidance, batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from diracbench.errors import UserError
from diracbench.dirac.sampler import SamplerSettings, dirac_sample
from diracbench.nn.models import build_model
from diracbench.operators import GeometricNoise, LinearSchedule, TableSchedule, family_from_config
from diracbench.operators.blur import GaussianBlurFamily
from diracbench.operators.inpaint import SmoothMaskFamily
from diracbench.seeding import image_generators

NOISE = GeometricNoise(0.01, 0.05)
TINY_NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


def settings(**kw) -> SamplerSettings:
    base = dict(dt=0.1, t_stop=0.0, estimator="look_ahead", delta=None, guidance="none", zeta=0.0, guidance_sign="descent", output="x0_hat")
    return SamplerSettings(**{**base, **kw})


def blur_family(size=16):
    # A curved schedule, as the greedy scheduler produces, so the test is not tied to linear t.
    return GaussianBlurFamily((size, size), 9, TableSchedule.from_rows([0, 0.5, 1], [0.3, 0.8, 2.0]))


def mask_family(size=16):
    return SmoothMaskFamily((size, size), LinearSchedule(0.1, 4.0), 4.0)


class Oracle(nn.Module):
    """Phi(y_t) = the true x0: perfect incremental reconstruction."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0 = x0

    def forward(self, y, sigma):
        return self.x0.clone() + 0 * y


def _images(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.mark.parametrize("family_fn", [blur_family, mask_family], ids=["blur", "mask"])
def test_oracle_keeps_the_iterate_at_noise_level_sigma_t(family_fn):
    fam = family_fn(32)
    x0 = _images(8, 32)
    noise1 = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    y = fam.apply(x0, 1.0) + NOISE.sigma_1 * noise1
    s = settings(dt=0.01, output="iterate")
    ratios, dcs = [], []

    def on_step(r):
        dcs.append(float((y - fam.at(1.0)(r.x0_hat)).pow(2).mean()))
        t_next = s.t_at(r.step + 1)
        ratios.append(float((r.iterate - fam.apply(x0, t_next)).std() / NOISE(t_next)))

    # Sampler seeds distinct from the measurement noise's seed: a shared stream would correlate them.
    out, nfe = dirac_sample(Oracle(x0), fam, NOISE, y, image_generators(range(1000, 1008)), s, on_step)
    assert nfe == 100 and len(ratios) == 100
    # y_t - A_t(x0) stays at noise level sigma_t along the whole path (Thm 3.6). The discrete
    # update gives Var' = (sigma_t'^2 / sigma_t^2)^2 Var + sigma_t^2 - sigma_t'^2, i.e. an O(dt)
    # excess over sigma_t'^2; the measured ratios follow that recursion up to sampling noise.
    var, predicted = NOISE.sigma_1**2, []
    for i in range(100):
        s2, sn2 = float(NOISE(s.t_at(i))) ** 2, float(NOISE(s.t_at(i + 1))) ** 2
        var = (sn2 / s2) ** 2 * var + s2 - sn2
        predicted.append(math.sqrt(var / sn2))
    assert max(abs(r - 1) for r in ratios) < 0.04
    assert max(abs(r - p) for r, p in zip(ratios, predicted)) < 0.015
    # ... down to the final iterate y_0 = A_0(x0) + sigma_0 z.
    assert float((out - fam.apply(x0, 0.0)).std()) == pytest.approx(NOISE.sigma_min * predicted[-1], rel=0.015)
    # Every x0_hat is data-consistent: its residual is exactly the measurement noise.
    np.testing.assert_allclose(dcs, float((NOISE.sigma_1 * noise1).pow(2).mean()), rtol=1e-5)


def test_one_step_of_the_update_rule_matches_the_formula():
    fam = blur_family()
    x0, y = _images(2), _images(2, seed=3)
    s = settings(dt=0.25, t_stop=1.0, output="iterate")  # stop after the first update: y_0.75
    net = Oracle(x0)
    out, nfe = dirac_sample(net, fam, NOISE, y, image_generators([5, 6]), s)
    assert nfe == 1
    s2, sn2 = float(NOISE(1.0)) ** 2, float(NOISE(0.75)) ** 2
    z = torch.stack([torch.randn(3, 16, 16, generator=g) for g in image_generators([5, 6])])
    want = y + (fam.apply(x0, 0.75) - fam.apply(x0, 1.0)) + (s2 - sn2) / s2 * (fam.apply(x0, 1.0) - y) + math.sqrt(s2 - sn2) * z
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("dt", "t_stop", "nfe"), [(0.02, 1.0, 1), (0.02, 0.25, 38), (0.02, 0.7, 16), (0.02, 0.0, 50), (0.005, 0.0, 200), (0.1, 0.55, 5), (0.2, 1.0, 1)])
def test_early_stopping_nfe_matches_the_official_configs(dt, t_stop, nfe):
    s = settings(dt=dt, t_stop=t_stop)
    assert s.nfe() == nfe
    records = []
    out, got = dirac_sample(Oracle(_images(1)), blur_family(), NOISE, _images(1), image_generators([0]), s, records.append)
    seen = [r.t for r in records]
    assert got == nfe and len(seen) == nfe
    assert seen[-1] >= t_stop - 1e-12 and (nfe == round(1 / dt) or seen[-1] - dt < t_stop)
    # One record per step, the last one marked; NFE counts the network evaluations so far.
    assert [r.step for r in records] == list(range(nfe)) and [r.nfe for r in records] == list(range(1, nfe + 1))
    assert [r.last for r in records] == [False] * (nfe - 1) + [True] and records[-1].iterate is None


def test_one_shot_returns_phi_of_y():
    torch.manual_seed(0)
    model = build_model("dirac", TINY_NET, 16).eval()
    y = _images(3)
    out, nfe = dirac_sample(model, blur_family(), NOISE, y, image_generators(range(3)), settings(t_stop=1.0))
    with torch.no_grad():
        want = model(y, torch.full((3,), NOISE.sigma_1))
    assert nfe == 1
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("kw", [dict(), dict(estimator="look_back"), dict(estimator="small_look_ahead", delta=0.05), dict(guidance="std", zeta=0.5), dict(guidance="error", zeta=1.0, output="iterate")], ids=["look_ahead", "look_back", "small_look_ahead", "std_guidance", "error_guidance"])
def test_batch_of_eight_equals_eight_single_images(kw):
    torch.manual_seed(0)
    model = build_model("dirac", TINY_NET, 16).eval()
    with torch.no_grad():  # a model that is not the identity at init, so the test sees the network
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fam, y = mask_family(), _images(8)
    s = settings(dt=0.2, **kw)
    seeds = list(range(100, 108))
    batch, _ = dirac_sample(model, fam, NOISE, y, image_generators(seeds), s)
    singles = torch.cat([dirac_sample(model, fam, NOISE, y[i : i + 1], image_generators(seeds[i : i + 1]), s)[0] for i in range(8)])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-5)
    again, _ = dirac_sample(model, fam, NOISE, y, image_generators(seeds), s)
    torch.testing.assert_close(batch, again, rtol=0, atol=0)
    assert not torch.allclose(batch, dirac_sample(model, fam, NOISE, y, image_generators([s_ + 1 for s_ in seeds]), s)[0]) or kw.get("output") != "iterate"


def test_small_look_ahead_with_delta_dt_equals_look_ahead_and_look_back_differs():
    x0, y = _images(2), _images(2, seed=4)
    model = Oracle(x0 * 0.5)  # an imperfect estimate, so the estimators disagree
    fam = blur_family()
    run = lambda **kw: dirac_sample(model, fam, NOISE, y, image_generators([1, 2]), settings(dt=0.25, output="iterate", **kw))[0]
    ahead = run()
    torch.testing.assert_close(run(estimator="small_look_ahead", delta=0.25), ahead, rtol=0, atol=1e-6)
    assert not torch.allclose(run(estimator="look_back"), ahead, atol=1e-4)
    # On the first step look-back has no t + dt <= 1 and falls back to look-ahead.
    torch.testing.assert_close(dirac_sample(model, fam, NOISE, y, image_generators([1, 2]), settings(dt=0.25, t_stop=1.0, output="iterate", estimator="look_back"))[0], dirac_sample(model, fam, NOISE, y, image_generators([1, 2]), settings(dt=0.25, t_stop=1.0, output="iterate"))[0])


class LinearNet(nn.Module):
    """Phi(y) = y + w: guidance moves y_t, so the data-consistency of the next x0_hat shows its sign."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, y, sigma):
        return y + self.w


@pytest.mark.parametrize("kind", ["std", "error"])
def test_descent_guidance_reduces_and_official_sign_increases_the_residual(kind):
    fam = mask_family()
    x0 = _images(4)
    y = fam.apply(x0, 1.0) + 0.05 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    model = LinearNet(0.3 * torch.ones(1, 3, 16, 16))
    res = {}
    for sign in ("descent", "official"):
        dcs = []
        s = settings(dt=0.1, t_stop=0.8, guidance=kind, zeta=2.0 if kind == "std" else 5.0, guidance_sign=sign)
        dirac_sample(model, fam, NOISE, y, image_generators(range(4)), s, lambda r: dcs.append(float((y - fam.at(1.0)(r.x0_hat)).pow(2).mean())))
        res[sign] = dcs[-1]
    dcs = []
    dirac_sample(model, fam, NOISE, y, image_generators(range(4)), settings(dt=0.1, t_stop=0.8), lambda r: dcs.append(float((y - fam.at(1.0)(r.x0_hat)).pow(2).mean())))
    assert res["descent"] < dcs[-1] < res["official"]


@pytest.mark.parametrize("kw", [dict(dt=0.3), dict(dt=0.0), dict(t_stop=1.5), dict(estimator="nope"), dict(estimator="small_look_ahead"), dict(estimator="small_look_ahead", delta=0.5), dict(guidance="off"), dict(guidance_sign="plus"), dict(output="y")])
def test_invalid_settings_are_user_errors(kw):
    with pytest.raises(UserError):
        settings(**kw)


def test_from_dict_names_missing_keys():
    with pytest.raises(UserError, match="zeta"):
        SamplerSettings.from_dict({"dt": 0.1, "t_stop": 0, "estimator": "look_ahead", "delta": None, "guidance": "none", "guidance_sign": "descent", "output": "x0_hat"})


def test_family_from_config_is_compatible():
    fam = family_from_config({"kind": "blur", "kernel_size": 7, "std_min": 0.3, "std_max": 2.0}, 16)
    out, nfe = dirac_sample(Oracle(_images(2)), fam, NOISE, _images(2), image_generators([0, 1]), settings(dt=0.5))
    assert out.shape == (2, 3, 16, 16) and nfe == 2
