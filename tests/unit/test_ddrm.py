"""DDRM: the analytic Gaussian-prior check (baselines.md §4.9 / §9.6 step 3), zero singular
values, thresholds, the time grid, and the method contract with a real (tiny) prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diracbench.errors import UserError
from diracbench.methods import ddrm
from diracbench.operators import GaussianBlurFamily, LinearSchedule, SmoothMaskFamily
from diracbench.prior.schedule import DDPMSchedule
from diracbench.seeding import image_generators

SCHEDULE = DDPMSchedule(1e-4, 2e-2, 1000)


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_eps(prior_std: float, schedule: DDPMSchedule):
    """The exact epsilon-predictor of x ~ N(0, prior_std^2 I): no network involved."""

    def eps(x: torch.Tensor, t: int) -> torch.Tensor:
        ab = schedule.alpha_bar(t)
        return (1.0 - ab) ** 0.5 * x / (ab * prior_std**2 + 1.0 - ab)

    return eps


def _blur(size: int = 32, kernel: int = 9, std: float = 1.5):
    return GaussianBlurFamily((size, size), kernel, LinearSchedule(0.3, std), dtype=torch.float64).at(1.0)


def _posterior_mean_check(op, s: torch.Tensor, prior_std: float, sigma_y: float, n_samples: int, eta: float = 0.85) -> float:
    """Relative error of the DDRM sample mean vs the closed-form posterior mean on
    well-determined components (s^2 > 0.1)."""
    svd = op.svd()
    size = op.H_r.shape[0] if hasattr(op, "H_r") else op.mask.shape[-1]
    g = torch.Generator().manual_seed(0)
    x = prior_std * torch.randn(1, 3, size, size, generator=g, dtype=torch.float64)
    y = op.forward(x) + sigma_y * torch.randn(x.shape, generator=g, dtype=torch.float64)
    y_rep = y.expand(n_samples, -1, -1, -1).contiguous()
    gens = image_generators(range(100, 100 + n_samples))
    out = ddrm.ddrm_sample(gaussian_eps(prior_std, SCHEDULE), svd, s, y_rep, sigma_y, SCHEDULE, ddrm.skip_timesteps(1000, 20), eta, 1.0, gens)
    assert torch.isfinite(out).all()
    mean_spec = svd.Vt(out.mean(0, keepdim=True))
    c = svd.Ut(y)
    s_full = s.expand(c.shape[1:])
    post = (s_full * c / sigma_y**2) / (1.0 / prior_std**2 + s_full**2 / sigma_y**2)
    good = (s_full**2 > 0.1).expand_as(c)
    assert good.sum() > 50
    return float((mean_spec[good] - post[good]).norm() / post[good].norm())


def test_gaussian_prior_posterior_mean_blur() -> None:
    op = _blur()
    s = ddrm.thresholded_singular_values(op.svd(), 3e-2, 0.0)
    err = _posterior_mean_check(op, s, prior_std=1.0, sigma_y=0.05, n_samples=16)
    assert err < 0.06, err


def test_gaussian_prior_posterior_mean_fails_for_a_wrong_sampler() -> None:
    """The check has teeth: a sampler that ignores the measurement noise level (sigma_y = 0 inside
    while the data have 0.3) lands far from the posterior mean."""
    op = _blur()
    s = ddrm.thresholded_singular_values(op.svd(), 3e-2, 0.0)
    svd = op.svd()
    g = torch.Generator().manual_seed(0)
    x = 0.5 * torch.randn(1, 3, 32, 32, generator=g, dtype=torch.float64)
    y = op.forward(x) + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    gens = image_generators(range(16))
    wrong = ddrm.ddrm_sample(gaussian_eps(0.5, SCHEDULE), svd, s, y.expand(16, -1, -1, -1).contiguous(), 0.0, SCHEDULE, ddrm.skip_timesteps(1000, 20), 0.85, 1.0, gens)
    right = ddrm.ddrm_sample(gaussian_eps(0.5, SCHEDULE), svd, s, y.expand(16, -1, -1, -1).contiguous(), 0.3, SCHEDULE, ddrm.skip_timesteps(1000, 20), 0.85, 1.0, image_generators(range(16)))
    c = svd.Ut(y)
    sf = s.expand(c.shape[1:])
    post = (sf * c / 0.09) / (4.0 + sf**2 / 0.09)
    good = (sf**2 > 0.1).expand_as(c)

    def err(out):
        m = svd.Vt(out.mean(0, keepdim=True))
        return float((m[good] - post[good]).norm() / post[good].norm())

    assert err(right) < 0.25
    assert err(wrong) > 2 * err(right)


def test_gaussian_prior_posterior_mean_mask() -> None:
    fam = SmoothMaskFamily((32, 32), LinearSchedule(0.1, 6.0), 4.0, dtype=torch.float64)
    op = fam.at(1.0)
    s = ddrm.thresholded_singular_values(op.svd(), 0.0, 1e-2)
    err = _posterior_mean_check(op, s, prior_std=1.0, sigma_y=0.1, n_samples=16)
    assert err < 0.06, err


def test_zero_singular_values_give_no_nan() -> None:
    """The mask centre is exactly 0 and the blur's thresholded components are 0; with noise in
    y both must take the no-information branch without producing inf/NaN."""
    fam = SmoothMaskFamily((16, 16), LinearSchedule(0.1, 4.0), 4.0)
    op = fam.at(1.0)
    s = ddrm.thresholded_singular_values(op.svd(), 0.0, 0.0)  # keep every value, zeros included
    assert (s == 0).any()
    y = op.forward(torch.rand(2, 3, 16, 16) * 2 - 1) + 0.1 * torch.randn(2, 3, 16, 16)
    out = ddrm.ddrm_sample(gaussian_eps(0.5, SCHEDULE), op.svd(), s, y, 0.1, SCHEDULE, ddrm.skip_timesteps(1000, 20), 0.85, 1.0, image_generators([1, 2]))
    assert torch.isfinite(out).all()
    blur = GaussianBlurFamily((16, 16), 9, LinearSchedule(0.3, 3.0)).at(1.0)
    s_b = ddrm.thresholded_singular_values(blur.svd(), 3e-2, 0.0)
    assert (s_b == 0).any() and (s_b > 0).any()
    out_b = ddrm.ddrm_sample(gaussian_eps(0.5, SCHEDULE), blur.svd(), s_b, blur.forward(torch.zeros(2, 3, 16, 16)) + 0.1, 0.1, SCHEDULE, ddrm.skip_timesteps(1000, 20), 0.85, 1.0, image_generators([1, 2]))
    assert torch.isfinite(out_b).all()


def test_zero_components_follow_the_prior_not_the_noise() -> None:
    """A component with s = 0 carries no information: its sample mean must not track the
    measurement noise there (the official sampler's failure mode, §4.8)."""
    n = 16
    mask = torch.ones(1, 1, 8, 8)
    mask[..., :4] = 0.0  # left half unobserved
    from diracbench.operators.inpaint import MaskOperator

    op = MaskOperator(mask, 1.0)
    s = ddrm.thresholded_singular_values(op.svd(), 0.0, 1e-2)
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y = (op.forward(torch.zeros(1, 3, 8, 8)) + 0.1 * noise).expand(n, -1, -1, -1).contiguous()
    out = ddrm.ddrm_sample(gaussian_eps(0.5, SCHEDULE), op.svd(), s, y, 0.1, SCHEDULE, ddrm.skip_timesteps(1000, 20), 0.85, 1.0, image_generators(range(n)))
    hidden = out[..., :4].mean(0)
    corr = torch.corrcoef(torch.stack([hidden.flatten(), noise[0, ..., :4].flatten()]))[0, 1]
    assert abs(float(corr)) < 0.3


def test_thresholds() -> None:
    blur = _blur(16, 9, 1.5)
    svd = blur.svd()
    s = ddrm.thresholded_singular_values(svd, 0.1, 0.0)
    kept_r = (svd.row_singular_values >= 0.1).sum()
    assert int((s[0] > 0).sum()) == int(kept_r) ** 2
    fam = SmoothMaskFamily((16, 16), LinearSchedule(0.1, 4.0), 4.0)
    m = fam.at(1.0).svd().singular_values
    sm = ddrm.thresholded_singular_values(fam.at(1.0).svd(), 0.0, 0.05)
    assert torch.equal(sm > 0, m >= 0.05)


def test_time_grid_is_the_official_skip_grid() -> None:
    grid = ddrm.time_grid(1000, 20)
    assert grid[0] == 0 and grid[-1] == 950 and len(grid) == 20
    assert ddrm.skip_timesteps(1000, 20) == grid[::-1]  # what the sampler walks down
    with pytest.raises(Exception):
        ddrm.time_grid(1000, 0)
    with pytest.raises(UserError, match="decrease"):
        ddrm.ddrm_sample(gaussian_eps(0.5, SCHEDULE), _blur(8, 3).svd(), torch.ones(1, 8, 8), torch.zeros(1, 3, 8, 8), 0.1, SCHEDULE, grid, 0.85, 1.0, image_generators([0]))


def test_batch_composition_does_not_change_a_sample() -> None:
    op = _blur(16, 9, 1.5)
    s = ddrm.thresholded_singular_values(op.svd(), 3e-2, 0.0)
    y = op.forward(torch.rand(3, 3, 16, 16, dtype=torch.float64) * 2 - 1)
    eps = gaussian_eps(0.5, SCHEDULE)
    both = ddrm.ddrm_sample(eps, op.svd(), s, y, 0.1, SCHEDULE, ddrm.skip_timesteps(1000, 10), 0.85, 1.0, image_generators([7, 8, 9]))
    one = ddrm.ddrm_sample(eps, op.svd(), s, y[1:2], 0.1, SCHEDULE, ddrm.skip_timesteps(1000, 10), 0.85, 1.0, image_generators([8]))
    torch.testing.assert_close(both[1:2], one)


@pytest.mark.parametrize("task", ["deblur", "inpaint"])
def test_reconstruct_with_a_trained_prior_file(tmp_path, task) -> None:
    from test_dps import PRIOR, _ctx, tiny_case, tiny_prior_file

    prob, recorder = tiny_case(task, n=3)
    hp = {"steps": 5, "eta": 0.85, "eta_b": 1.0, "blur_threshold": 3e-2, "mask_threshold": 1e-2, "batch_size": 2, "prior": PRIOR,
          "trajectory": {"every": 2, "lpips_every": 0, "lpips": {"net": "vgg", "upsample_below": 64}}}
    rec = ddrm.reconstruct(prob, hp, _ctx(tiny_prior_file(tmp_path / "prior.pt"), recorder))
    assert rec.x_hat.shape == tuple(prob.y.shape) and np.isfinite(rec.x_hat).all()
    assert (rec.nfe == 5).all() and (rec.seconds > 0).all()
    tr = rec.trajectory
    assert sorted(tr["step"].unique().tolist()) == [0, 2, 4]
    assert tr["t"].max() == pytest.approx(0.8) and tr["t"].min() == 0.0
    # The last logged x0 estimate is the output.
    last = tr[tr["step"] == 4].sort_values("image")
    mse = ((rec.x_hat - recorder.x.numpy().clip(0, 1)) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(last["psnr"].to_numpy(), 10 * np.log10(1 / mse), rtol=1e-4)
    # Batching does not change a sample.
    again = ddrm.reconstruct(prob, {**hp, "batch_size": 3}, _ctx(tiny_prior_file(tmp_path / "prior.pt")))
    np.testing.assert_allclose(again.x_hat, rec.x_hat, atol=1e-5)
