"""DiffPIR: the official quadratic time grid, its own mean/variance recursion under a Gaussian prior
(Monte Carlo of the implementation against the closed form, reference §4.5), the no-data limits,
batch and grid invariance, the method contract with a tiny prior, and the hyper-parameter errors."""

from __future__ import annotations

import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import yaml

from diracbench.errors import UserError
from diracbench.methods import diffpir
from diracbench.methods.registry import spec
from diracbench.operators import GaussianBlurFamily, LinearSchedule, SmoothMaskFamily
from diracbench.prior.schedule import DDPMSchedule
from diracbench.seeding import image_generators
from test_ddrm import gaussian_eps  # the exact epsilon of a Gaussian prior, shared with DDRM's tests

SCHEDULE = DDPMSchedule(1e-4, 2e-2, 1000)
PRIOR_STD = 0.5
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "diffpir.schema.yaml"

pytestmark = pytest.mark.usefixtures("one_thread")


def recursion(ts: list[int], s: np.ndarray, c: np.ndarray, sigma_y: float, lam: float, zeta: float, prior_std: float, rho_factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of DiffPIR's output per coordinate of the operator's SVD basis.

    In that basis (A = U S V^T, c = U^T y) every step acts on one coordinate u as
    u0 = d u (denoiser), u_hat = (s c + rho u0) / (s^2 + rho) (data step), then the re-noising
    u' = sqrt(ab') u_hat + sqrt(1 - ab') (sqrt(1 - zeta) (u - sqrt(ab) u_hat) / sqrt(1 - ab) + sqrt(zeta) z):
    affine in u plus independent Gaussian noise, starting from N(0, 1)."""
    mean, var = np.zeros_like(c), np.ones_like(c)
    for t, tn in zip(ts[:-1], ts[1:]):
        ab, abn = SCHEDULE.alpha_bar(t), SCHEDULE.alpha_bar(tn)
        d = math.sqrt(ab) * prior_std**2 / (ab * prior_std**2 + 1.0 - ab)
        rho = rho_factor * lam * sigma_y**2 * ab / (1.0 - ab)
        a, b = rho * d / (s**2 + rho), s * c / (s**2 + rho)
        k = math.sqrt(1.0 - zeta) * math.sqrt(1.0 - abn) / math.sqrt(1.0 - ab)
        gain = math.sqrt(abn) * a + k * (1.0 - math.sqrt(ab) * a)
        shift = (math.sqrt(abn) - k * math.sqrt(ab)) * b
        mean, var = gain * mean + shift, gain**2 * var + zeta * (1.0 - abn)
    return mean, var


def _operator(kind: str, size: int = 8):
    if kind == "blur":
        return GaussianBlurFamily((size, size), 5, LinearSchedule(0.3, 1.0), dtype=torch.float64).at(1.0)
    return SmoothMaskFamily((size, size), LinearSchedule(0.1, 2.0), 4.0, dtype=torch.float64).at(1.0)


def _monte_carlo(op, y: torch.Tensor, sigma_y: float, steps: int, lam: float, zeta: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and variance of the implementation's outputs, per SVD coordinate."""
    out = diffpir.diffpir_sample(gaussian_eps(PRIOR_STD, SCHEDULE), op, y.expand(n, -1, -1, -1).contiguous(), sigma_y, SCHEDULE, diffpir.quad_timesteps(1000, steps), lam, zeta, image_generators(range(1000, 1000 + n)), clip_x0=False)
    v = op.svd().Vt(out).numpy()
    return v.mean(0), v.var(0, ddof=1)


def _spectral(op, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    svd = op.svd()
    c = svd.Ut(y)[0].numpy()
    return np.broadcast_to(svd.singular_values.numpy(), c.shape), c


def _z2(mean_mc: np.ndarray, mean: np.ndarray, var: np.ndarray, n: int) -> np.ndarray:
    return (mean_mc - mean) ** 2 / (var / n)


# (a) ------------------------------------------------------------------------------------------


def test_quadratic_grid_is_the_official_one() -> None:
    t100 = diffpir.quad_timesteps(1000, 100)
    assert t100[:5] == [999, 899, 857, 825, 798] and t100[-4:] == [15, 10, 5, 0]
    assert len(t100) == 100 and len(set(t100)) == 100 and t100 == sorted(t100, reverse=True)
    assert diffpir.quad_timesteps(1000, 20) == [999, 770, 675, 602, 541, 487, 438, 393, 351, 311, 274, 239, 205, 172, 141, 111, 82, 54, 26, 0]
    assert diffpir.quad_timesteps(1000, 2) == [999, 0]
    assert len(diffpir.quad_timesteps(1000, 501)) == 501


# (b) ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["blur", "mask"])
def test_gaussian_prior_matches_its_own_recursion(kind: str) -> None:
    """Every step is affine + Gaussian under a Gaussian prior with its exact denoiser, so the output
    law per SVD coordinate is known in closed form; the implementation must match it in mean and
    variance within Monte-Carlo error. (DiffPIR is not an exact posterior sampler: the reference is
    its own recursion.) The same samples reject the official code's rho units (a quarter of ours)."""
    op = _operator(kind)
    steps, lam, zeta, sigma_y, n = 50, 1.0, 0.3, 0.2, 400
    g = torch.Generator().manual_seed(0)
    x = PRIOR_STD * torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    y = op.forward(x) + sigma_y * torch.randn(x.shape, generator=g, dtype=torch.float64)
    s, c = _spectral(op, y)
    ts = diffpir.quad_timesteps(1000, steps)
    mean, var = recursion(ts, s, c, sigma_y, lam, zeta, PRIOR_STD)
    mean_mc, var_mc = _monte_carlo(op, y, sigma_y, steps, lam, zeta, n)

    z2 = _z2(mean_mc, mean, var, n)
    assert z2.max() < 25.0 and 0.7 < z2.mean() < 1.4, (z2.max(), z2.mean())
    ratio = var_mc / var
    sd = math.sqrt(2.0 / (n - 1))
    assert np.abs(ratio - 1.0).max() < 5 * sd and abs(ratio.mean() - 1.0) < 0.03, (ratio.min(), ratio.max(), ratio.mean())
    # The data really act (the output is not the prior), and a unit slip would be caught.
    assert np.abs(mean).max() > 0.2
    wrong, _ = recursion(ts, s, c, sigma_y, lam, zeta, PRIOR_STD, rho_factor=0.25)
    assert _z2(mean_mc, wrong, var, n).mean() > 5.0


# (c) ------------------------------------------------------------------------------------------


def test_without_data_zeta_zero_recovers_the_prior_and_zeta_one_underdisperses() -> None:
    """lam -> infinity makes rho_t huge: the data step returns the prior's x0 and DiffPIR is a pure
    prior sampler, DDIM-like for zeta = 0 (the prior's law up to the 100-step discretisation; the
    reference's scalar toy: std 0.491 for 0.5) and too narrow for zeta = 1 (0.344)."""
    op = _operator("blur")
    sigma_y, n, steps = 0.1, 400, 100
    y = torch.full((1, 3, 8, 8), 0.7, dtype=torch.float64)  # ignored by the sampler here
    s, c = _spectral(op, y)
    ts = diffpir.quad_timesteps(1000, steps)
    stds = {}
    for zeta in (0.0, 1.0):
        mean, var = recursion(ts, s, c, sigma_y, 1e12, zeta, PRIOR_STD)
        mean_mc, var_mc = _monte_carlo(op, y, sigma_y, steps, 1e12, zeta, n)
        assert np.abs(mean).max() < 1e-6
        assert _z2(mean_mc, mean, var, n).mean() < 1.4
        assert abs((var_mc / var).mean() - 1.0) < 0.03
        stds[zeta] = math.sqrt(var_mc.mean())
    assert stds[0.0] == pytest.approx(PRIOR_STD, rel=0.04)
    assert stds[1.0] < 0.8 * PRIOR_STD


# (d) ------------------------------------------------------------------------------------------


def test_an_image_does_not_depend_on_its_batch() -> None:
    op = GaussianBlurFamily((16, 16), 5, LinearSchedule(0.3, 1.0)).at(1.0)
    y = op.forward(torch.rand(3, 3, 16, 16) * 2 - 1) + 0.05 * torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    eps = gaussian_eps(PRIOR_STD, SCHEDULE)
    lams, zetas = torch.tensor([1.0, 7.0, 25.0]), torch.tensor([0.0, 0.3, 1.0])
    ts = diffpir.quad_timesteps(1000, 20)
    batch = diffpir.diffpir_sample(eps, op, y, 0.05, SCHEDULE, ts, lams, zetas, image_generators([7, 8, 9]))
    for i in range(3):
        alone = diffpir.diffpir_sample(eps, op, y[i : i + 1], 0.05, SCHEDULE, ts, lams[i], zetas[i], image_generators([7 + i]))
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-5, atol=1e-6)
    assert (batch[0] - batch[1]).abs().max() > 1e-2


def _hparams(**kw) -> dict:
    from test_dps import PRIOR

    return {"steps": 6, "lam": 7.0, "zeta": 0.3, "batch_size": 2, "prior": PRIOR, **kw}


@pytest.mark.parametrize("task", ["deblur", "inpaint"])
def test_grid_in_one_batch_equals_separate_runs(tmp_path, task: str) -> None:
    from test_dps import _ctx, tiny_prior_file, tiny_problem

    prob = tiny_problem(task, n=2)
    ctx = _ctx(tiny_prior_file(tmp_path / "prior.pt"))
    cands = [_hparams(lam=lam, zeta=zeta, batch_size=3) for lam in (1.0, 25.0) for zeta in (0.1, 0.6)]
    entries = diffpir.grid_entries(2, cands)
    assert entries == [(j, i) for j in range(4) for i in range(2)]
    grid = diffpir.reconstruct_grid(prob, cands, ctx)
    for cand, rec in zip(cands, grid):
        single = diffpir.reconstruct(prob, cand, ctx)
        np.testing.assert_allclose(rec.x_hat, single.x_hat, atol=1e-5)
        assert rec.x_hat.shape == tuple(prob.y.shape) and (rec.nfe == 5).all() and (rec.seconds > 0).all()
    assert np.abs(grid[0].x_hat - grid[3].x_hat).max() > 1e-3
    assert diffpir.grid_entries(2, [cands[0], {**cands[1], "steps": 8}]) is None


def test_reconstruct_contract_batching_and_trajectory(tmp_path) -> None:
    from test_dps import _ctx, tiny_case, tiny_prior_file

    prob, recorder = tiny_case("deblur", n=3)
    ctx = _ctx(tiny_prior_file(tmp_path / "prior.pt"), recorder)
    hp = _hparams(trajectory={"every": 2, "lpips_every": 0, "lpips": {"net": "vgg", "upsample_below": 64}})
    rec = diffpir.reconstruct(prob, hp, ctx)
    assert rec.x_hat.shape == tuple(prob.y.shape) and np.isfinite(rec.x_hat).all()
    assert (rec.nfe == 5).all() and (rec.seconds > 0).all()
    tr = rec.trajectory
    assert sorted(tr["step"].unique().tolist()) == [0, 2, 4, 5]
    assert tr["t"].max() == pytest.approx(0.999) and tr["t"].min() == 0.0
    assert tr.groupby("image")["nfe"].max().tolist() == [5, 5, 5]
    # The last row is the output itself.
    last = tr[tr["step"] == 5].sort_values("image")
    mse = ((rec.x_hat - recorder.x.numpy().clip(0, 1)) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(last["psnr"].to_numpy(), 10 * np.log10(1 / mse), rtol=1e-4)
    one = diffpir.reconstruct(prob.select([1]), _hparams(batch_size=1), _ctx(ctx.inputs["prior"]))
    np.testing.assert_allclose(one.x_hat, rec.x_hat[1:2], atol=1e-5)


# (e) ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"zeta": 1.5}, r"diffpir: zeta must lie in \[0, 1\] \(got 1.5\)"),
        ({"zeta": -0.1}, r"zeta must lie in \[0, 1\]"),
        ({"lam": 0.0}, r"diffpir: lam must be a positive number \(got 0.0\)"),
        ({"lam": -3}, r"lam must be a positive number"),
        ({"steps": 1}, r"diffpir: steps must be an integer between 2 and the prior's num_timesteps 1000 \(got 1\)"),
        ({"steps": 1001}, r"between 2 and the prior's num_timesteps 1000"),
        ({"steps": 600}, r"steps 600 repeats timesteps .* use at most 501"),
    ],
)
def test_bad_hyper_parameters_are_one_line_user_errors(tmp_path, change: dict, message: str) -> None:
    from test_dps import _ctx, tiny_problem

    with pytest.raises(UserError, match=message) as err:
        diffpir.reconstruct(tiny_problem(n=1), _hparams(**change), _ctx(tmp_path / "never-read.pt"))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="lack"):
        diffpir.reconstruct(tiny_problem(n=1), {k: v for k, v in _hparams().items() if k != "zeta"}, _ctx(tmp_path / "never-read.pt"))


def test_registry_entry_and_defaults_fit_the_schema() -> None:
    entry = spec("diffpir")
    assert (entry.display, entry.order, entry.env, entry.inputs, entry.gpu) == ("DiffPIR", 35, "torch", ("prior",), True)
    settings = entry.settings({})
    assert settings["hparams"] == {"steps": 100, "lam": 7.0, "zeta": 0.3, "batch_size": 64}
    assert set(settings["grid"]) == {"deblur", "inpaint", "sr4"}
    schema = yaml.safe_load(SCHEMA.read_text())
    jsonschema.validate(settings, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**settings, "hparams": {**settings["hparams"], "zeta": 2.0}}, schema)
    # New tasks need no schema edit.
    jsonschema.validate({**settings, "grid": {"some_new_task": {"lam": [3.0]}}}, schema)
