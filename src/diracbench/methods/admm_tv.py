"""ADMM-TV (`--method admm-tv`): scico proximal ADMM on ½||y − A x||² + λ||D x||₂,₁, baselines.md §6.

D stacks the horizontal and vertical forward differences of each colour channel
(`FiniteDifference(axes=(H, W), append=0)`: Neumann boundary, no differences across channels) and
||.||₂,₁ sums the Euclidean norm of each (horizontal, vertical) pair: isotropic TV per channel.
Splitting as in scico's deconv_tv_padmm notebook: f = 0, g(z0, z1) = ½||y − z0||² + λ||z1||₂,₁,
constraint [A; D] x − z = 0, solved by `ProximalADMM` with mu, nu = 1.01 × power-iteration
estimates of ||[A; D]||² and ||−I||² (per image, so independent of the batch) and x0 = A^T y (or
the measurement itself, see `init`), z0 = u0 = 0.

The problem is convex; rho only sets how fast ProximalADMM gets there, so with a fixed iteration
budget both lambda and rho are tuned on val. nfe = ADMM iterations per image. Every iteration is
scico's own `ProximalADMM.step`, wrapped in `jax.jit` (state in, state out); lambda and rho are
per batch element, so one batch holds a whole tuning grid.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

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
    "admm-tv": {
        "display": "ADMM-TV",
        "order": 60,
        "env": "scico",
        "tunes": ["lam", "rho", "maxiter"],
        "schema": "admm_tv.schema.yaml",
        "resources": {"tune": {"mem_mb": 6000, "runtime": 60}, "sample": {"mem_mb": 6000, "runtime": 60}},
        "defaults": {
            "hparams": {"maxiter": 200, "init": "adjoint", "blur_impl": "matrix", "batch_size": 1024},
            "grid": {"deblur": {"lam": [0.01, 0.02, 0.05], "rho": [0.03, 0.1, 0.3]}, "inpaint": {"lam": [0.01, 0.02, 0.05], "rho": [0.03, 0.1, 0.3]}},
            "objective": "auto",
            "max_images": {"val": 16, "test": None},
        },
    },
}

METHOD = "admm-tv"
REQUIRED = ("lam", "rho", "maxiter", "init", "blur_impl", "batch_size")
MU_FACTOR = 1.01  # scico's safety factor: mu must exceed ||K||^2 strictly
POWER_ITERATIONS = 100


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
        if hp.get("init") not in INITS:
            raise UserError(f"{METHOD}: init {hp.get('init')!r} is unknown; use one of {list(INITS)}")
        for key in ("lam", "rho"):
            if key in hp and float(hp[key]) <= 0:
                raise UserError(f"{METHOD}: {key} must be positive (got {hp[key]})")

    def solve_chunk(chunk: Chunk) -> ChunkResult:
        return run_padmm(problem.spec, chunk)

    return solve_candidates(problem, candidates, method=METHOD, required=REQUIRED, vectorised=("lam", "rho"), solve_chunk=solve_chunk, trajectory=trajectory)


def tv_operators(spec: dict, batch: int, blur_impl: str) -> tuple[Any, Any, Any]:
    """(ScicoOperator for A, D, K = [A; D]) on (batch, H, W, C)."""
    from scico import linop

    op = build_operator(spec, batch, blur_impl)
    D = linop.FiniteDifference(input_shape=op.A.input_shape, axes=(1, 2), append=0, jit=True)
    K = linop.VerticalStack((op.A, D), jit=True)
    return op, D, K


@lru_cache(maxsize=8)
def mu_nu(spec_key: str, blur_impl: str) -> tuple[float, float]:
    """ProximalADMM's mu > ||[A; D]||² and nu > ||−I||², estimated on one image (batch-independent)."""
    import json

    jax, jnp = jax_modules()
    _, _, K = tv_operators(json.loads(spec_key), 1, blur_impl)

    # ProximalADMM.estimate_parameters' recipe (power iteration on K^H K from a fixed random start,
    # 100 iterations, times 1.01), as one compiled loop: scico's eager loop takes seconds here.
    def body(_, v):
        w = K.adj(K(v))
        return w / jnp.linalg.norm(w)

    v0 = jax.random.normal(jax.random.PRNGKey(0), K.input_shape, jnp.float32)
    v = jax.jit(lambda v0: jax.lax.fori_loop(0, POWER_ITERATIONS, body, v0 / jnp.linalg.norm(v0)))(v0)
    norm_sq = float(jnp.vdot(v, K.adj(K(v))) / jnp.vdot(v, v))
    return MU_FACTOR * norm_sq, MU_FACTOR * 1.0  # ||B||^2 = ||-I||^2 = 1 exactly


def tv_objective(op: Any, D: Any, y: Any, x: Any, lam: Any) -> np.ndarray:
    """Per-image ½||y − A x||² + λ Σ_pixels,channels ||(D_h x, D_v x)||₂  (lam: (n, 1, 1, 1))."""
    _, jnp = jax_modules()
    fidelity = 0.5 * jnp.sum((y - op.A(x)) ** 2, axis=(1, 2, 3))
    tv = jnp.sum(jnp.sqrt(jnp.sum(D(x) ** 2, axis=0)), axis=(1, 2, 3))
    return np.asarray(fidelity + lam.reshape(-1) * tv)


def _padmm(K: Any, mu: float, nu: float, y: Any, lam: Any, rho: Any, x0: Any, maxiter: int = 1) -> Any:
    from scico import functional, loss
    from scico.optimize import ProximalADMM

    # Per-image lambda: ScaledFunctional.prox uses lam * scale, which broadcasts over (2, n, H, W, C).
    g = functional.SeparableFunctional((loss.SquaredL2Loss(y=y), functional.ScaledFunctional(functional.L21Norm(l2_axis=0), lam)))
    return ProximalADMM(f=functional.ZeroFunctional(), g=g, A=K, B=None, rho=rho, mu=mu, nu=nu, x0=x0, maxiter=maxiter, itstat_options=itstat_quiet())


@lru_cache(maxsize=8)
def _compiled(spec_key: str, batch: int, blur_impl: str) -> tuple[Any, Any, Any, Any]:
    """(op, D, init_state, step) for one batch shape; `step` is scico's ProximalADMM.step, jitted."""
    import json

    jax, _ = jax_modules()
    op, D, K = tv_operators(json.loads(spec_key), batch, blur_impl)
    mu, nu = mu_nu(spec_key, blur_impl)

    def init_state(y, lam, rho, x0):
        return _padmm(K, mu, nu, y, lam, rho, x0)._get_state_variables()

    @jax.jit
    def step(state, y, lam, rho):
        solver = _padmm(K, mu, nu, y, lam, rho, state["x"])
        solver._set_state_variables(**state)
        solver.step()
        return solver._get_state_variables()

    return op, D, init_state, step


def run_padmm(spec: dict, chunk: Chunk, history: bool = False) -> ChunkResult:
    """scico ProximalADMM on one batch (every iterate to the chunk's recorder callback); with
    `history`, stats hold the per-image objective of every iterate."""
    _, jnp = jax_modules()
    hp = chunk.hparams
    op, D, init_state, step = _compiled(operator_key(spec), len(chunk.y), hp["blur_impl"])
    y = jnp.asarray(chunk.y)
    lam, rho = per_image(chunk.params["lam"]), per_image(chunk.params["rho"])
    state = init_state(y, lam, rho, op.init(y, hp["init"]))
    objective: list[np.ndarray] = []

    def observe(x) -> None:
        objective.append(tv_objective(op, D, y, x, lam))

    iterates, seconds = run_iterations(step, state, (y, lam, rho), chunk, observe if history else None)
    return ChunkResult(iterates, {"objective": np.stack(objective)} if history else None, seconds)
