"""PnP-ADMM with scico's DnCNN (`--method pnp-admm`), baselines.md §5.

scico `ADMM` on  min_x ½||y − A x||² + g(x)  with C = I, where the proximal map of g is replaced
by the pre-trained DnCNN that ships inside the scico wheel (variant "17M": 17 layers, trained at
noise std 0.10 on [0, 1]; no download). Per iteration (scaled dual u):
    x <- (A^T A + rho I)^-1 (A^T y + rho (z − u))    exact: blur via the 1-D SVDs, mask elementwise
    z <- DnCNN(x + u)                                 colour channels denoised one by one
    u <- u + x − z
Initial z = x0, u = 0; the output is the final x clipped to [0, 1]. The x-update is solved
exactly instead of by the notebook's loose CG (tol 1e-3, 10 its) so that each image's result is
independent of its batch; it is the update that CG approximates.

Tuned on val: rho and the iteration count (nfe = ADMM iterations = DnCNN evaluations per image).
Runs in JAX on the device `configure_jax` picks (CPU unless --device cuda); torch tensors cross
over as numpy arrays only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from diracbench.errors import UserError
from diracbench.methods.base import Problem, Reconstruction, RunContext
from diracbench.scico_ops import (
    INITS,
    Chunk,
    ChunkResult,
    batch_psnr_dc,
    build_operator,
    configure_jax,
    itstat_quiet,
    jax_modules,
    per_image,
    solve_candidates,
)

METHOD = "pnp-admm"
REQUIRED = ("variant", "rho", "maxiter", "init", "blur_impl", "batch_size")
BLIND_VARIANTS = ("6L", "6M", "6H", "17L", "17M", "17H")


def reconstruct(problem: Problem, hparams: dict, ctx: RunContext) -> Reconstruction:
    return _solve(problem, [hparams], ctx, log_trajectory=True)[0]


def reconstruct_grid(problem: Problem, candidates: list[dict], ctx: RunContext) -> list[Reconstruction]:
    return _solve(problem, candidates, ctx, log_trajectory=False)


def _solve(problem: Problem, candidates: list[dict], ctx: RunContext, log_trajectory: bool) -> list[Reconstruction]:
    configure_jax(ctx.threads, ctx.device.type)
    for hp in candidates:
        if hp.get("variant") not in BLIND_VARIANTS:
            raise UserError(f"{METHOD}: DnCNN variant {hp.get('variant')!r} is not supported; use one of {list(BLIND_VARIANTS)} (the noise-level variants 6N/17N need a sigma input)")
        if hp.get("init") not in INITS:
            raise UserError(f"{METHOD}: init {hp.get('init')!r} is unknown; use one of {list(INITS)}")
        if float(hp.get("rho", 1.0)) <= 0:
            raise UserError(f"{METHOD}: rho must be positive (got {hp['rho']})")

    def solve_chunk(chunk: Chunk) -> ChunkResult:
        return run_admm(problem.spec, chunk)

    return solve_candidates(problem, candidates, method=METHOD, required=REQUIRED, vectorised=("rho",), solve_chunk=solve_chunk, log_trajectory=log_trajectory)


def exact_x_step(normal_solve) -> Any:
    """scico subproblem solver for the exact x-update
    (c A^T A + sum_i rho_i I) x = c A^T y + sum_i rho_i (z_i − u_i)   (C_i = I, c = 2 * f.scale)."""
    from scico.optimize.admm import SubproblemSolver

    class ExactXStep(SubproblemSolver):
        def solve(self, x0):
            admm = self.admm
            c = 2.0 * admm.f.scale
            rhs = c * admm.f.A.adj(admm.f.y)
            rho_sum = 0.0
            for rho, z, u in zip(admm.rho_list, admm.z_list, admm.u_list):
                rhs = rhs + rho * (z - u)
                rho_sum = rho_sum + rho
            return normal_solve(rhs, rho_sum, c)

    return ExactXStep()


@lru_cache(maxsize=4)
def dncnn_functional(variant: str) -> Any:
    """A scico Functional whose prox is the shipped DnCNN, applied channel by channel to (N, H, W, C)."""
    jax, jnp = jax_modules()
    from scico import denoiser
    from scico.functional import Functional

    net = denoiser.DnCNN(variant)  # weights from scico/data/flax/dncnn<variant>.mpk in the wheel

    @jax.jit
    def denoise(v):
        n, h, w, c = v.shape
        planes = jnp.transpose(v, (0, 3, 1, 2)).reshape(n * c, h, w, 1)
        out = net.model.apply(net.variables, planes, train=False, mutable=False)
        return jnp.transpose(out.reshape(n, c, h, w), (0, 2, 3, 1))

    class ChannelwiseDnCNN(Functional):
        has_eval = False
        has_prox = True

        def prox(self, v, lam=1.0, **kwargs):
            # A blind denoiser: its strength is fixed by training, so lam = 1/rho is ignored.
            return denoise(v)

    return ChannelwiseDnCNN()


def run_admm(spec: dict, chunk: Chunk) -> ChunkResult:
    """scico ADMM on one batch; returns the iterates at the requested iteration counts."""
    jax, jnp = jax_modules()
    from scico import linop, loss
    from scico.optimize.admm import ADMM

    hp = chunk.hparams
    op = build_operator(spec, len(chunk.y), hp["blur_impl"])
    y = jnp.asarray(chunk.y)
    x0 = op.init(y, hp["init"])
    longest = chunk.snapshots[-1]
    solver = ADMM(
        f=loss.SquaredL2Loss(y=y, A=op.A),
        g_list=[dncnn_functional(hp["variant"])],
        C_list=[linop.Identity(y.shape)],
        rho_list=[per_image(chunk.params["rho"])],
        x0=x0,
        maxiter=longest,
        subproblem_solver=exact_x_step(op.normal_solve),
        itstat_options=itstat_quiet(),
    )
    iterates: dict[int, np.ndarray] = {}
    stats: dict[str, list] = {"psnr": [], "dc": []}
    x_clean = jnp.asarray(chunk.x) if chunk.log else None

    def record(s) -> None:
        done = s.itnum + 1
        if done in chunk.snapshots:
            iterates[done] = np.asarray(s.x)
        if chunk.log:
            psnr, dc = batch_psnr_dc(op.A, y, s.x, x_clean)
            stats["psnr"].append(psnr)
            stats["dc"].append(dc)

    if chunk.log:
        psnr, dc = batch_psnr_dc(op.A, y, x0, x_clean)
        stats["psnr"].append(psnr)
        stats["dc"].append(dc)
    solver.solve(callback=record)
    return ChunkResult(iterates, {k: np.stack(v) for k, v in stats.items()} if chunk.log else None)
