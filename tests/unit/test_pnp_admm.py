"""PnP-ADMM: the DnCNN weights come from the scico wheel (offline), and the solver is per-image."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import scipy.ndimage
import torch

from diracbench.errors import UserError
from diracbench.methods import pnp_admm
from diracbench.methods.base import Problem, Recorder, RunContext
from diracbench.operators import GeometricNoise, LinearSchedule, family_from_spec, operator_spec
from diracbench.operators.blur import GaussianBlurFamily
from diracbench.operators.inpaint import SmoothMaskFamily
from diracbench.scico_ops import configure_jax, jax_modules, operator_key

configure_jax(1)

H, W = 16, 16
CTX = RunContext(torch.device("cpu"), 1, 0)


def smooth_images(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = scipy.ndimage.gaussian_filter(rng.random((n, 3, H, W)), (0, 0, 1.2, 1.2))
    x = (x - x.min(axis=(1, 2, 3), keepdims=True)) / np.ptp(x, axis=(1, 2, 3), keepdims=True)
    return torch.from_numpy(x.astype(np.float32))


def make_case(task: str, n: int = 2, seed: int = 0) -> tuple[Problem, torch.Tensor]:
    """(the problem, its clean images)."""
    family = GaussianBlurFamily((H, W), 9, LinearSchedule(0.3, 1.5)) if task == "deblur" else SmoothMaskFamily((H, W), LinearSchedule(0.1, 3.0), 4.0)
    spec = operator_spec(family, GeometricNoise(0.01, 0.05), task)
    family = family_from_spec(spec)
    x = smooth_images(n, seed)
    noise = torch.from_numpy(np.random.default_rng(seed + 100).standard_normal(x.shape).astype(np.float32))
    y = family.measurement_operator().forward(x) + 0.05 * noise
    return Problem(y, [f"img{i}" for i in range(n)], spec, family, family.measurement_operator(), 0.05, "val"), x


def make_problem(task: str, n: int = 2, seed: int = 0) -> Problem:
    return make_case(task, n, seed)[0]


def hparams(**kw) -> dict:
    return {"variant": "6M", "rho": 0.2, "maxiter": 4, "init": "measurement", "blur_impl": "matrix", "batch_size": 64, **kw}


def test_shipped_dncnn_loads_offline_and_denoises(monkeypatch):
    """17M (the paper's variant) loads with every network connection refused, and is a trained
    denoiser: it removes over half the squared error of std-0.1 noise, which random weights would not."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    pnp_admm.dncnn_functional.cache_clear()
    _, jnp = jax_modules()
    den = pnp_admm.dncnn_functional("17M")
    x = smooth_images(2, 1).numpy().transpose(0, 2, 3, 1)
    noisy = x + 0.1 * np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    out = np.asarray(den.prox(jnp.asarray(noisy), 5.0))
    assert out.shape == x.shape
    assert np.mean((out - x) ** 2) < 0.5 * np.mean((noisy - x) ** 2)


@pytest.mark.parametrize("task", ["deblur", "inpaint"])
def test_pnp_improves_on_the_measurement_and_logs_its_iterations(task):
    problem, x = make_case(task)
    ctx = RunContext(torch.device("cpu"), 1, 0, recorder=Recorder.for_problem(problem, x))
    rec = pnp_admm.reconstruct(problem, hparams(maxiter=6, rho=0.2 if task == "deblur" else 1.0), ctx)
    assert rec.x_hat.shape == tuple(problem.y.shape) and rec.x_hat.dtype == np.float32
    assert np.all(rec.nfe == 6)
    mse_y = ((problem.y.clamp(0, 1) - x) ** 2).mean().item()
    mse = ((torch.from_numpy(rec.x_hat) - x) ** 2).mean().item()
    assert mse < mse_y
    traj = rec.trajectory
    assert sorted(set(traj.step)) == list(range(7)) and len(traj) == 7 * len(problem)
    assert np.isfinite(traj.psnr).all() and np.isfinite(traj.dc).all()


def test_results_do_not_depend_on_batching_and_grid_equals_single_runs():
    problem = make_problem("deblur", n=3)
    grid = [hparams(rho=rho, maxiter=k) for rho in (0.05, 0.5) for k in (2, 5)]
    batched = pnp_admm.reconstruct_grid(problem, grid, CTX)
    for hp, rec in zip(grid, batched):
        alone = pnp_admm.reconstruct(problem.subset(1), {**hp, "batch_size": 1}, CTX)
        np.testing.assert_allclose(rec.x_hat[:1], alone.x_hat, atol=1e-4)
        assert np.all(rec.nfe == hp["maxiter"])
    assert np.abs(batched[1].x_hat - batched[3].x_hat).max() > 1e-3  # rho reaches the solver
    assert np.abs(batched[0].x_hat - batched[1].x_hat).max() > 1e-3  # snapshots differ by iteration


def test_exact_x_step_solves_the_admm_subproblem():
    """After one iteration, x satisfies (A^T A + rho I) x = A^T y + rho (z0 - u0) with z0 = x0, u0 = 0."""
    _, jnp = jax_modules()
    problem = make_problem("deblur", n=2)
    op, init_state, step = pnp_admm._compiled(operator_key(problem.spec), 2, "fft", "6M")
    y = jnp.asarray(problem.y.numpy().transpose(0, 2, 3, 1))
    rho = jnp.asarray(np.array([0.1, 1.0], np.float32).reshape(-1, 1, 1, 1))
    x0 = op.init(y, "measurement")
    state = step(init_state(y, rho, x0), y, rho)
    lhs = op.A.adj(op.A(state["x"])) + rho * state["x"]
    rhs = op.A.adj(y) + rho * x0
    assert float(jnp.abs(lhs - rhs).max()) < 1e-4


def test_bad_hyper_parameters_are_user_errors():
    problem = make_problem("inpaint", n=1)
    with pytest.raises(UserError, match="variant"):
        pnp_admm.reconstruct(problem, hparams(variant="17N"), CTX)
    with pytest.raises(UserError, match=r"needs hyper-parameters \['rho'\]"):
        pnp_admm.reconstruct(problem, {k: v for k, v in hparams().items() if k != "rho"}, CTX)
    with pytest.raises(UserError, match="maxiter"):
        pnp_admm.reconstruct(problem, hparams(maxiter=0), CTX)
