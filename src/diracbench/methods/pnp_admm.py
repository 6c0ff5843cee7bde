"""PnP-ADMM with scico's DnCNN (`--method pnp-admm`), baselines.md §5.

scico `ADMM` on  min_x ½||y − A x||² + g(x)  with C = I, where the proximal map of g is replaced
by the pre-trained DnCNN that ships inside the scico wheel (variant "17M": 17 layers, trained at
noise std 0.10 on [0, 1]; no download). Per iteration (scaled dual u):
    x <- (A^T A + rho I)^-1 (A^T y + rho (z − u))    exact: blur via the 1-D SVDs, mask elementwise
    z <- DnCNN(x + u)                                 colour channels denoised one by one
    u <- u + x − z
Initial z = x0, u = 0; the output is the final x clipped to [0, 1]. The x-update is solved
exactly instead of by the notebook's loose CG (tol 1e-3, 10 its) so that each image's result is
independent of its batch; it is the update that CG approximates. x0 (`init`): "measurement"
(y for blur, clip(y / max(m, 0.1)) for the mask) or "adjoint" (A^T y) — never the notebook's
converged pseudo-inverse, which amplifies the noise (baselines.md §5.4).

scico's own `ADMM.step` does every iteration; it is wrapped in `jax.jit` (state in, state out) so
a step is one compiled call. Tuned on val: rho and the iteration count (nfe = ADMM iterations =
DnCNN evaluations per image). Runs in JAX on the device `configure_jax` picks (CPU unless
--device cuda); torch tensors cross over as numpy arrays only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


from diracbench.errors import UserError
from diracbench.methods.base import Problem, Reconstruction, RunContext, recorder_for
from diracbench.metrics.recorder import STEP_MAJOR, Trajectory
from diracbench.scico_ops import (
    INITS,
    Chunk,
    ChunkResult,
    build_operator,
    configure_jax,
    itstat_quiet,
    jax_modules,
    operator_key,
    per_image,
    run_iterations,
    solve_candidates,
)

# Registry entry (read as a literal by diracbench.methods.registry, without importing this module).
METHOD_SPECS = {
    "pnp-admm": {
        "display": "PnP-ADMM",
        "order": 50,
        "env": "scico",
        "tunes": ["rho", "maxiter"],
        "schema": "pnp_admm.schema.yaml",
        "resources": {"tune": {"mem_mb": 6000, "runtime": 60}, "sample": {"mem_mb": 6000, "runtime": 60}},
        "defaults": {
            "hparams": {"variant": "17M", "init": "measurement", "blur_impl": "matrix", "batch_size": 128},
            "grid": {"deblur": {"rho": [0.05, 0.1, 0.2, 0.4], "maxiter": [3, 5, 8]}, "inpaint": {"rho": [0.1, 0.3, 1.0], "maxiter": [10, 20, 30]}},
            "objective": "auto",
            "max_images": {"val": 8, "test": None},
        },
    },
}

METHOD = "pnp-admm"
REQUIRED = ("variant", "rho", "maxiter", "init", "blur_impl", "batch_size")
BLIND_VARIANTS = ("6L", "6M", "6H", "17L", "17M", "17H")


def reconstruct(problem: Problem, hparams: dict, ctx: RunContext) -> Reconstruction:
    recorder = recorder_for(problem, ctx)
    # Every iteration's PSNR and data consistency, no LPIPS.
    trajectory = None if recorder is None else recorder.trajectory(every=1, order=STEP_MAJOR)
    return _solve(problem, [hparams], ctx, trajectory)[0]


def reconstruct_grid(problem: Problem, candidates: list[dict], ctx: RunContext) -> list[Reconstruction]:
    return _solve(problem, candidates, ctx, None)


def _solve(problem: Problem, candidates: list[dict], ctx: RunContext, trajectory: Trajectory | None) -> list[Reconstruction]:
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

    return solve_candidates(problem, candidates, method=METHOD, required=REQUIRED, vectorised=("rho",), solve_chunk=solve_chunk, trajectory=trajectory)


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


def _admm(A: Any, normal_solve: Any, g: Any, y: Any, rho: Any, x0: Any) -> Any:
    from scico import linop, loss
    from scico.optimize.admm import ADMM

    return ADMM(
        f=loss.SquaredL2Loss(y=y, A=A),
        g_list=[g],
        C_list=[linop.Identity(y.shape)],
        rho_list=[rho],
        x0=x0,
        maxiter=1,
        subproblem_solver=exact_x_step(normal_solve),
        itstat_options=itstat_quiet(),
    )


@lru_cache(maxsize=8)
def _compiled(spec_key: str, batch: int, blur_impl: str, variant: str) -> tuple[Any, Any, Any]:
    """(op, init_state, step) for one batch shape; `step` is scico's ADMM.step, jitted."""
    import json

    jax, _ = jax_modules()
    op = build_operator(json.loads(spec_key), batch, blur_impl)
    g = dncnn_functional(variant)

    def init_state(y, rho, x0):
        return _admm(op.A, op.normal_solve, g, y, rho, x0)._get_state_variables()

    @jax.jit
    def step(state, y, rho):
        solver = _admm(op.A, op.normal_solve, g, y, rho, state["x"])
        solver._set_state_variables(**state)
        solver.step()
        return solver._get_state_variables()

    return op, init_state, step


def run_admm(spec: dict, chunk: Chunk) -> ChunkResult:
    """scico ADMM on one batch; returns the iterates at the requested iteration counts (and passes
    every iterate to the chunk's recorder callback)."""
    _, jnp = jax_modules()
    hp = chunk.hparams
    op, init_state, step = _compiled(operator_key(spec), len(chunk.y), hp["blur_impl"], hp["variant"])
    y = jnp.asarray(chunk.y)
    rho = per_image(chunk.params["rho"])
    state = init_state(y, rho, op.init(y, hp["init"]))
    iterates, seconds = run_iterations(step, state, (y, rho), chunk)
    return ChunkResult(iterates, None, seconds)
