"""ADMM-TV: the scico solver minimises the stated objective, per image, whatever the batch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from diracbench.errors import UserError
from diracbench.methods import admm_tv
from diracbench.methods.base import Problem, Recorder, RunContext
from diracbench.operators import GeometricNoise, LinearSchedule, family_from_spec, operator_spec
from diracbench.operators.blur import GaussianBlurFamily
from diracbench.operators.inpaint import SmoothMaskFamily
from diracbench.scico_ops import Chunk, configure_jax, to_nhwc

configure_jax(1)

H, W = 12, 10
LAM = 0.05
FAMILIES = {
    "deblur": lambda dtype=torch.float32: GaussianBlurFamily((H, W), 7, LinearSchedule(0.3, 1.5), dtype=dtype),
    "inpaint": lambda dtype=torch.float32: SmoothMaskFamily((H, W), LinearSchedule(0.1, 2.5), 4.0, dtype=dtype),
}


def make_case(task: str, n: int = 3, seed: int = 0) -> tuple[Problem, torch.Tensor]:
    """(the problem, its clean images)."""
    spec = operator_spec(FAMILIES[task](), GeometricNoise(0.01, 0.05), task)
    family = family_from_spec(spec)
    rng = np.random.default_rng(seed)
    x = scipy.ndimage.gaussian_filter(rng.random((n, 3, H, W)), (0, 0, 1.5, 1.5))
    x = (x - x.min(axis=(1, 2, 3), keepdims=True)) / np.ptp(x, axis=(1, 2, 3), keepdims=True)
    x = torch.from_numpy(x.astype(np.float32))
    y = family.measurement_operator().forward(x) + 0.05 * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    return Problem(y, [f"img{i}" for i in range(n)], spec, family, family.measurement_operator(), 0.05, "val"), x


def make_problem(task: str, n: int = 3, seed: int = 0) -> Problem:
    return make_case(task, n, seed)[0]


def hparams(**kw) -> dict:
    return {"lam": LAM, "rho": 0.3, "maxiter": 50, "init": "adjoint", "blur_impl": "matrix", "batch_size": 64, **kw}


# ---- an independent high-accuracy solver of the same problem (float64, dense, Chambolle-Pock) ----


def dense_operator(problem: Problem) -> np.ndarray:
    """A as a dense (3HW x 3HW) float64 matrix acting on (C, H, W)-raveled images."""
    op = FAMILIES[problem.task](torch.float64).measurement_operator()
    n = 3 * H * W
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 3, H, W)
    return op.forward(eye).reshape(n, n).T.numpy()


def difference_matrices() -> tuple[np.ndarray, np.ndarray]:
    """Forward differences along H and W per channel, zero in the last row/column (Neumann)."""
    n = 3 * H * W
    idx = np.arange(n).reshape(3, H, W)
    Dh, Dv = np.zeros((n, n)), np.zeros((n, n))
    for c in range(3):
        for i in range(H):
            for j in range(W):
                k = idx[c, i, j]
                if i < H - 1:
                    Dh[k, idx[c, i + 1, j]], Dh[k, k] = 1.0, -1.0
                if j < W - 1:
                    Dv[k, idx[c, i, j + 1]], Dv[k, k] = 1.0, -1.0
    return Dh, Dv


def objective(A, Dh, Dv, y, lam, x) -> float:
    return 0.5 * np.sum((y - A @ x) ** 2) + lam * np.sum(np.sqrt((Dh @ x) ** 2 + (Dv @ x) ** 2))


def chambolle_pock(A, Dh, Dv, y, lam, iters=3000) -> np.ndarray:
    n = A.shape[1]
    tau = sigma = 0.35  # tau * sigma * ||D||^2 <= 0.35^2 * 8 < 1
    M = np.linalg.inv(np.eye(n) + tau * A.T @ A)
    Aty = A.T @ y
    x, xb, qh, qv = Aty.copy(), Aty.copy(), np.zeros(n), np.zeros(n)
    for _ in range(iters):
        qh += sigma * (Dh @ xb)
        qv += sigma * (Dv @ xb)
        shrink = np.maximum(1.0, np.sqrt(qh**2 + qv**2) / lam)
        qh, qv = qh / shrink, qv / shrink
        x_new = M @ (x - tau * (Dh.T @ qh + Dv.T @ qv) + tau * Aty)
        xb, x = 2 * x_new - x, x_new
    return x


@pytest.mark.parametrize("task", ["deblur", "inpaint"])
def test_objective_decreases_and_solution_matches_a_high_accuracy_solve(task):
    problem = make_problem(task, n=2)
    A = dense_operator(problem)
    Dh, Dv = difference_matrices()
    y0 = problem.y[0].numpy().astype(np.float64).ravel()
    reference = chambolle_pock(A, Dh, Dv, y0, LAM)
    best = objective(A, Dh, Dv, y0, LAM, reference)

    chunk = Chunk(
        hparams={"init": "adjoint", "blur_impl": "matrix", "batch_size": 2},
        y=to_nhwc(problem.y),
        params={"lam": np.full(2, LAM), "rho": np.full(2, 0.3)},
        snapshots=[2000],
    )
    out = admm_tv.run_padmm(problem.spec, chunk, history=True)
    history = out.stats["objective"][:, 0]  # per iteration, image 0
    checkpoints = history[[0, 10, 50, 200, 1000, 2000]]
    assert np.all(np.diff(checkpoints) <= 1e-5 * best), checkpoints
    assert checkpoints[0] > 1.05 * best  # the start (A^T y) is far from optimal: the decrease is real

    ours = np.transpose(out.iterates[2000][0], (2, 0, 1)).astype(np.float64).ravel()
    # Our own objective evaluation agrees with the reference formula, and both solvers reach one minimum.
    assert abs(history[-1] - objective(A, Dh, Dv, y0, LAM, ours)) < 1e-4 * best
    assert abs(objective(A, Dh, Dv, y0, LAM, ours) - best) < 1e-4 * best
    psnr_between = 10 * np.log10(1.0 / np.mean((ours - reference) ** 2))
    assert psnr_between > 50


def test_tv_is_per_channel_and_isotropic():
    """The regulariser is sum over pixels and channels of ||(d_h, d_v)||_2: no cross-channel terms."""
    from diracbench.scico_ops import jax_modules, per_image

    _, jnp = jax_modules()
    problem = make_problem("deblur", n=1)
    op, D, _ = admm_tv.tv_operators(problem.spec, 1, "matrix")
    x = np.zeros((1, H, W, 3), np.float32)
    x[0, :, :, 1] = np.arange(W, dtype=np.float32)[None, :] * 0.1  # a ramp along W in one channel only
    y = jnp.zeros_like(jnp.asarray(x))
    tv = admm_tv.tv_objective(op, D, y, jnp.asarray(x), per_image([1.0])) - 0.5 * float(jnp.sum(op.A(jnp.asarray(x)) ** 2))
    assert tv[0] == pytest.approx(0.1 * H * (W - 1), rel=1e-5)


def test_results_do_not_depend_on_batching_and_grid_equals_single_runs():
    problem = make_problem("deblur", n=3)
    ctx = RunContext(torch.device("cpu"), 1, 0)
    grid = [hparams(lam=lam, rho=rho, maxiter=k) for lam in (0.02, 0.05) for rho in (0.1, 1.0) for k in (10, 30)]
    batched = admm_tv.reconstruct_grid(problem, grid, ctx)
    for hp, rec in zip(grid[::3], batched[::3]):
        alone = admm_tv.reconstruct(problem, {**hp, "batch_size": 1}, ctx)
        np.testing.assert_allclose(rec.x_hat, alone.x_hat, atol=2e-5)
        assert np.all(rec.nfe == hp["maxiter"])
    # Different grid points give different reconstructions (the vectorised values reach the solver).
    assert np.abs(batched[0].x_hat - batched[4].x_hat).max() > 1e-3


def test_single_run_logs_a_trajectory_and_improves_on_the_measurement():
    problem, x = make_case("deblur", n=2)
    rec = admm_tv.reconstruct(problem, hparams(maxiter=100, lam=0.01), RunContext(torch.device("cpu"), 1, 0, recorder=Recorder.for_problem(problem, x)))
    traj = rec.trajectory
    assert len(traj) == 101 * 2 and set(traj["step"]) == set(range(101))
    first, last = traj[traj.step == 0].psnr.mean(), traj[traj.step == 100].psnr.mean()
    assert last > first
    mse_y = ((problem.y.clamp(0, 1) - x) ** 2).mean().item()
    mse_tv = ((torch.from_numpy(rec.x_hat) - x) ** 2).mean().item()
    assert mse_tv < mse_y
    assert rec.seconds.shape == (2,) and np.all(rec.seconds > 0)


def test_bad_hyper_parameters_are_user_errors():
    problem = make_problem("inpaint", n=1)
    ctx = RunContext(torch.device("cpu"), 1, 0)
    with pytest.raises(UserError, match="lam"):
        admm_tv.reconstruct(problem, {k: v for k, v in hparams().items() if k != "lam"}, ctx)
    with pytest.raises(UserError, match="init"):
        admm_tv.reconstruct(problem, hparams(init="zeros"), ctx)
    with pytest.raises(UserError, match="positive"):
        admm_tv.reconstruct(problem, hparams(rho=0.0), ctx)
