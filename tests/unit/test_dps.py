"""DPS: the gradient goes through the network, each image has its own residual norm and step,
batching and the batched tuning grid change nothing, and the method contract end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diracbench.errors import UserError
from diracbench.methods import dps
from diracbench.methods.base import Problem, Recorder, RunContext
from diracbench.nn.models import build_model, save_weights
from diracbench.operators import GaussianBlurFamily, GeometricNoise, LinearSchedule, SmoothMaskFamily, operator_spec
from diracbench.prior.schedule import DDPMSchedule
from diracbench.seeding import image_generators

SCHEDULE = DDPMSchedule(1e-4, 2e-2, 1000)
PRIOR = {"format": "diracbench", **SCHEDULE.to_dict()}
TINY_NET = {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyEps(nn.Module):
    """A small random nonlinear epsilon-network: its Jacobian matters, unlike a zero-initialised
    U-Net head."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: int):
        return self.b(torch.tanh(self.a(x) * (1 + t / 1000))), None


def tiny_case(task: str = "deblur", n: int = 3, size: int = 16, sigma: float = 0.05) -> tuple[Problem, Recorder]:
    """A real operator, real noisy measurements of smooth random images, as `measure` makes them;
    the clean images live in the recorder, as the harness keeps them."""
    if task == "deblur":
        family = GaussianBlurFamily((size, size), 5, LinearSchedule(0.3, 1.0))
    else:
        family = SmoothMaskFamily((size, size), LinearSchedule(0.1, size / 5), 4.0)
    spec = operator_spec(family, GeometricNoise(0.01, sigma), task)
    g = torch.Generator().manual_seed(1)
    low = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    op = family.measurement_operator()
    y = op.forward(x) + sigma * torch.randn(x.shape, generator=g)
    problem = Problem(y, [f"img{i}" for i in range(n)], spec, family, op, sigma, "val")
    return problem, Recorder.for_problem(problem, x)


def tiny_problem(task: str = "deblur", n: int = 3, size: int = 16, sigma: float = 0.05) -> Problem:
    return tiny_case(task, n, size, sigma)[0]


def tiny_prior_file(path: Path, size: int = 16) -> Path:
    torch.manual_seed(0)
    model = build_model("ddpm", TINY_NET, size)
    save_weights(path, "ddpm", TINY_NET, size, model.state_dict(), None, {"note": "random weights for tests"})
    return path


def _ctx(prior: Path, recorder: Recorder | None = None) -> RunContext:
    return RunContext(device=torch.device("cpu"), threads=1, seed=0, inputs={"prior": prior}, recorder=recorder)


def test_gradient_goes_through_the_network() -> None:
    prob = tiny_problem()
    op = GaussianBlurFamily((16, 16), 5, LinearSchedule(0.3, 1.0), dtype=torch.float64).at(1.0)
    y_pm = (2 * prob.y - 1).double()
    x_t = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    net = TinyEps().double()
    abar = SCHEDULE.alpha_bar(300)
    x0, _, grad, norms, _ = dps.guidance(net, op, y_pm, x_t, 300, abar, clip_x0=True)

    def objective(x: torch.Tensor) -> torch.Tensor:
        eps, _ = net(x, 300)
        est = ((x - (1 - abar) ** 0.5 * eps) / abar**0.5).clamp(-1, 1)
        return (y_pm - op.forward(est)).flatten(1).norm(dim=1).sum()

    # Central differences on a few pixels agree with the returned gradient...
    for idx in [(0, 0, 3, 4), (1, 2, 8, 8), (2, 1, 15, 0)]:
        h = 1e-5
        e = torch.zeros_like(x_t)
        e[idx] = h
        with torch.no_grad():
            fd = (objective(x_t + e) - objective(x_t - e)) / (2 * h)
        assert float(grad[idx]) == pytest.approx(float(fd), rel=1e-4, abs=1e-8)
    # ...and differ from the gradient that treats the network output as a constant.
    with torch.enable_grad():
        x = x_t.clone().requires_grad_(True)
        eps_const = net(x_t, 300)[0].detach()
        est = ((x - (1 - abar) ** 0.5 * eps_const) / abar**0.5).clamp(-1, 1)
        (g_const,) = torch.autograd.grad((y_pm - op.forward(est)).flatten(1).norm(dim=1).sum(), x)
    assert (grad - g_const).norm() > 0.05 * g_const.norm()
    assert torch.allclose(norms, (y_pm - op.forward(x0)).flatten(1).norm(dim=1))


def test_each_image_gets_its_own_norm_and_step() -> None:
    prob = tiny_problem(n=2)
    y_pm = 2 * prob.y - 1
    spaced = SCHEDULE.spaced(20)
    net = TinyEps()
    pair = dps.dps_sample(net, prob.operator, y_pm, spaced, torch.tensor([0.0, 0.5]), "fixedsmall", image_generators([11, 12]))
    alone0 = dps.dps_sample(net, prob.operator, y_pm[:1], spaced, torch.tensor([0.0]), "fixedsmall", image_generators([11]))
    alone1 = dps.dps_sample(net, prob.operator, y_pm[1:], spaced, torch.tensor([0.5]), "fixedsmall", image_generators([12]))
    # Batch-level norms (the official code's) would couple the two images; per-image ones do not.
    torch.testing.assert_close(pair[:1], alone0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pair[1:], alone1, rtol=1e-4, atol=1e-5)
    unguided = dps.dps_sample(net, prob.operator, y_pm[1:], spaced, torch.tensor([0.0]), "fixedsmall", image_generators([12]))
    assert (alone1 - unguided).abs().max() > 1e-2  # the step size really acts


def test_guidance_lowers_the_residual_with_an_analytic_prior() -> None:
    """Gaussian-prior plumbing test (baselines.md §3.6): finite output, smaller residual."""
    prob = tiny_problem(n=2)
    y_pm = 2 * prob.y - 1

    def gaussian_eps(x: torch.Tensor, t: int):
        ab = SCHEDULE.alpha_bar(t)
        return (1 - ab) ** 0.5 * x / (ab * 0.25 + 1 - ab), None

    spaced = SCHEDULE.spaced(100)
    res = {}
    for scale in (0.0, 1.0):
        out = dps.dps_sample(gaussian_eps, prob.operator, y_pm, spaced, torch.full((2,), scale), "fixedsmall", image_generators([5, 6]))
        assert torch.isfinite(out).all()
        res[scale] = float((y_pm - prob.operator.forward(out)).flatten(1).norm(dim=1).mean())
    assert res[1.0] < 0.5 * res[0.0]


def test_learned_variance_needs_variance_channels() -> None:
    prob = tiny_problem(n=1)
    with pytest.raises(UserError, match="learned"):
        dps.dps_sample(TinyEps(), prob.operator, 2 * prob.y - 1, SCHEDULE.spaced(5), torch.zeros(1), "learned", image_generators([1]))


def test_respacing_keeps_both_ends() -> None:
    sp = SCHEDULE.spaced(50)
    assert sp.timesteps[0] == 0 and sp.timesteps[-1] == 999 and len(sp) == 50
    full = SCHEDULE.spaced(1000)
    np.testing.assert_allclose(full.betas, SCHEDULE.betas, rtol=1e-10)
    np.testing.assert_allclose(sp.alphas_cumprod, SCHEDULE.alphas_cumprod[list(sp.timesteps)])


@pytest.mark.parametrize("task", ["deblur", "inpaint"])
def test_grid_in_one_batch_equals_separate_runs(tmp_path, task) -> None:
    prob = tiny_problem(task, n=2)
    ctx = _ctx(tiny_prior_file(tmp_path / "prior.pt"))
    base = {"steps": 4, "variance": "fixedsmall", "clip_x0": True, "batch_size": 3, "prior": PRIOR}
    cands = [{**base, "scale": 0.1}, {**base, "scale": 1.0}]
    grid = dps.reconstruct_grid(prob, cands, ctx)
    for cand, rec in zip(cands, grid):
        single = dps.reconstruct(prob, cand, ctx)
        np.testing.assert_allclose(rec.x_hat, single.x_hat, atol=1e-5)
        assert rec.x_hat.shape == tuple(prob.y.shape) and (rec.nfe == 4).all() and (rec.seconds > 0).all()
    assert np.abs(grid[0].x_hat - grid[1].x_hat).max() > 1e-4


def test_reconstruct_logs_a_trajectory(tmp_path) -> None:
    prob, recorder = tiny_case(n=2)
    prior = tiny_prior_file(tmp_path / "prior.pt")
    hp = {"steps": 10, "scale": 0.3, "variance": "fixedsmall", "clip_x0": True, "batch_size": 2, "prior": PRIOR,
          "trajectory": {"every": 4, "lpips_every": 0, "lpips": {"net": "vgg", "upsample_below": 64}}}
    # Without the harness's recorder nothing is logged, and the samples are the same.
    quiet = dps.reconstruct(prob, hp, _ctx(prior))
    rec = dps.reconstruct(prob, hp, _ctx(prior, recorder))
    assert quiet.trajectory is None and np.array_equal(quiet.x_hat, rec.x_hat)
    tr = rec.trajectory
    assert sorted(tr["step"].unique().tolist()) == [0, 4, 8, 9]
    assert set(tr["name"]) == {"img0", "img1"}
    assert tr["t"].iloc[0] == pytest.approx(0.999) and tr["t"].min() == 0.0
    assert tr["dc"].notna().all() and tr["psnr"].notna().all() and tr["lpips"].isna().all()
    assert (tr.groupby("image")["nfe"].max() == 10).all()


def test_missing_hparams_are_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="scale"):
        dps.reconstruct(tiny_problem(n=1), {"steps": 2, "variance": "fixedsmall", "clip_x0": True, "batch_size": 1, "prior": PRIOR}, _ctx(tiny_prior_file(tmp_path / "p.pt")))
